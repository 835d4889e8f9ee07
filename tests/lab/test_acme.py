"""Automatic certificates on the lab: the operator (a host process) against Pebble, through both LB nodes.

Pebble runs on the lab bridge's host address; its DNS sends every name to the first LB node (every
proxy answers every HTTP-01 challenge the same way, so one is enough), and its certificates live
120 s, so renewal happens within the test. The operator is given Pebble's directory and the CA
bundle of Pebble's listener.

* A service labelled `swarmgate.acme=true` gets a certificate for its host: HTTPS through BOTH LB
  nodes presents it, and it verifies against Pebble's root, within seconds.
* A host whose name resolves to no proxy (Pebble's DNS is told so) fails, backs off, shows in
  /v1/status, and the first host keeps its certificate.
* Restarting the operator process places no new order for the host that has a certificate.
* Two thirds into the certificate's life, a new one (a new serial) is served on both nodes.

Traffic goes only to the lab bridge (198.18.0.0/24) and loopback.
Run it under the lab's lock: `flock /tmp/swarmgate-lab.lock .venv/bin/pytest tests/lab/test_acme.py`.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from lab.pebble import CHALLTESTSRV, HOME, PEBBLE, Pebble, Settings, _recorded, running
from tests.lab import http
from tests.lab.cluster import Lab
from tests.lab.operator_fixture import RunningOperator, create_routed, operator
from tests.support import wait_for

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not (os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)),
                       reason="Debian's pebble package is not installed (scripts/install-deps.sh)"),
]

SERVICE, FAILING = "sg-acme-shop", "sg-acme-fail"
HOST, FAIL_HOST = "shop.acme.test", "fail.acme.test"
VALIDITY = 120


def log(msg: str) -> None:
    print(f"[acme {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def pebble(lab: Lab) -> Iterator[Pebble]:
    first_lb = lab.address(lab.lb_nodes[0])
    with running(Settings(answer_ip=first_lb, listen=lab.host_addr, validity_seconds=VALIDITY)) as ca:
        yield ca


def served(address: str, root: Path) -> x509.Certificate | None:
    """The certificate HTTPS for HOST presents at an LB node, if it verifies against Pebble's root."""
    http.assert_lab_route(address)
    context = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection((address, 443), timeout=3) as raw, \
                context.wrap_socket(raw, server_hostname=HOST) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def serials(lab: Lab, root: Path) -> set[int] | None:
    """The serial every LB node serves for HOST (one set member when they agree), or None."""
    certs = [served(lab.address(n), root) for n in lab.lb_nodes]
    if any(c is None for c in certs):
        return None
    return {c.serial_number for c in certs if c is not None}


def orders_logged(op: RunningOperator, host: str) -> int:
    return sum(1 for line in op.log_text().splitlines() if "ACME order" in line and "failed" not in line
               and host in line)


def dns_points(host: str, address: str) -> None:
    """Tell Pebble's DNS (pebble-challtestsrv's management API) that `host` resolves to `address`."""
    recorded = _recorded(HOME, "dns")
    assert recorded is not None, "Pebble's DNS is not running"
    argv = recorded[1]
    management = argv[argv.index("-management") + 1]
    assert management.startswith("127.0.0.1:")
    body = json.dumps({"host": host, "addresses": [address]}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://{management}/add-a", data=body), timeout=5):
        pass


def acme_hosts(op: RunningOperator) -> dict[str, dict[str, object]]:
    hosts: dict[str, dict[str, object]] = op.status().get("acme", {}).get("hosts", {})
    return hosts


def test_certificates_are_issued_served_everywhere_kept_across_restarts_and_renewed(
        lab: Lab, pebble: Pebble, tmp_path: Path) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    top = (f'ACMEDirectory = "{pebble.directory_url}"\nACMECABundle = "{pebble.ca_bundle}"\n'
           'ACMEEmail = "ops@acme.test"\n')
    client = lab.manager_client()
    try:
        with operator(lab, tmp_path, top_extra=top, services=(SERVICE, FAILING)) as op:
            wait_for(op.converged, timeout=60, what="the proxies serving the first config")
            started = time.monotonic()
            create_routed(client, SERVICE, {"com.docker.lb.hosts": HOST, "com.docker.lb.port": "8080",
                                            "swarmgate.acme": "true"})
            first = wait_for(lambda: serials(lab, root), timeout=90, what=f"a verified certificate for {HOST}")
            took = time.monotonic() - started
            log(f"first certificate served on both LB nodes {took:.1f} s after the service was created")
            assert len(first) == 1, "both LB nodes serve the same certificate"
            assert took < 30, f"took {took:.1f} s"

            # A host whose name leads to no proxy: its orders fail; the first host is untouched.
            dns_points(FAIL_HOST, lab.host_addr)  # nothing of the lab answers HTTP there
            create_routed(client, FAILING, {"com.docker.lb.hosts": FAIL_HOST, "com.docker.lb.port": "8080",
                                            "swarmgate.acme": "true"})
            wait_for(lambda: int(str(acme_hosts(op).get(FAIL_HOST, {}).get("failures", 0))) >= 1, timeout=60,
                     what=f"a failed order for {FAIL_HOST} in /v1/status")
            failing = acme_hosts(op)[FAIL_HOST]
            log(f"{FAIL_HOST}: {failing}")
            assert failing["certificate"] is None and failing["last_error"]
            assert serials(lab, root) == first

            # A restart finds the certificate in its secret: no new order for HOST.
            ordered = orders_logged(op, HOST)
            op.stop()
            op.start()
            op.wait_full_passes(5)
            assert orders_logged(op, HOST) == ordered, "the restarted operator ordered HOST again"
            assert serials(lab, root) == first

            # Renewal at two thirds of 120 s: a new serial on both nodes, still verified.
            def renewed_everywhere() -> set[int] | None:
                now = serials(lab, root)
                return now if now is not None and now != first and len(now) == 1 else None

            renewed = wait_for(renewed_everywhere, timeout=VALIDITY + 30, what="a renewed certificate on both LB nodes")
            log(f"renewed: serial {first} -> {renewed}")
            assert orders_logged(op, HOST) >= ordered + 1
    finally:
        client.close()

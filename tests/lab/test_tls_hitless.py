"""A TLS host added, its certificate rotated and the host removed, hitless, on the seed deployment.

Before the certificate courier, each of these put Swarm secrets into the proxy's spec, so Swarm
replaced every proxy task (measured: 31 of 728 requests for an unrelated host failed, the proxy
service went from version 68 to 137). Now the courier (`interlock-proxy-certs`, global on the LB
nodes) mounts the secrets and copies them into a node volume the proxy reads, and the operator only
pushes configs. Under steady load for demo.local on both LB nodes: a self-signed certificate and
key (two Swarm secrets) for a new service, HTTPS for its host on both LB nodes, a rotation to new
secrets (the new certificate served, by fingerprint), then the service removed. Not one request may
fail, no proxy task may be replaced, the proxy's version may not move, and the key may appear in no
service inspect, no operator log line and no status document.

Run it under the lab's lock: `flock /tmp/swarmgate-lab.lock .venv/bin/pytest tests/lab/test_tls_hitless.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from tests import docker_api
from tests.lab import http, shared_seed
from tests.lab.cluster import Lab
from tests.lab.load import Load
from tests.lab.operator_fixture import _remove_when_unused as remove_when_unused
from tests.lab.operator_fixture import create_routed
from tests.lab.seed_deployment import DEMO_HOST, OPERATOR, PROXY, Seed
from tests.support import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.shared_seed(keeps=True)]

COURIER = f"{PROXY}-certs"
SERVICE = "sg-tls-hitless"
HOST = "secure.local"


def log(msg: str) -> None:
    print(f"[tls-hitless {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_pair(tmp: Path, tag: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for HOST and its key (PEM), made with openssl."""
    cert, key = tmp / f"{tag}.crt", tmp / f"{tag}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert.read_bytes(), key.read_bytes()


def fingerprint_pem(pem: bytes) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest()


def https_fingerprint(address: str, host: str) -> str | None:
    """The sha256 of the certificate the LB node shows for `host`, once `GET /ping` answers 200."""
    http.assert_lab_route(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # self-signed: checked by fingerprint instead
    try:
        with socket.create_connection((address, 443), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(f"GET /ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(65536):
                answer += chunk
    except (OSError, ssl.SSLError):
        return None
    if der is None or not answer.startswith(b"HTTP/1.1 200"):
        return None
    return hashlib.sha256(der).hexdigest()


def key_marks(key_pem: bytes) -> list[str]:
    """Distinctive pieces of the private key: its base64 lines (each would betray it)."""
    return [line for line in key_pem.decode().splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def seed(lab: Lab) -> Iterator[Seed]:
    assert len(lab.lb_nodes) >= 2, "the seed needs two load-balancer nodes"
    s = Seed(lab, log=log)
    with contextlib.suppress(docker.errors.APIError):
        docker_api.remove_service(s.client(), SERVICE)
    shared_seed.acquire(s)  # a fresh deployment, or the one a previous module kept at rest
    wait_for(s.converged, timeout=120, what="the seed deployment converged")
    try:
        yield s
    finally:
        with contextlib.suppress(docker.errors.APIError):
            docker_api.remove_service(s.client(), SERVICE)
        # Only the courier mounts the secrets, and it lets go of them once the host is gone (the test
        # waits for that): the deployment can stay for the next module. Else it goes first.
        try:
            for secret in s.client().secrets.list(filters={"name": "sg-tls-"}):
                remove_when_unused(secret.remove)
        except docker.errors.APIError:
            s.undeploy()
            for secret in s.client().secrets.list(filters={"name": "sg-tls-"}):
                remove_when_unused(secret.remove)
        else:
            shared_seed.keep(s)
        s.close()


def operator_log(seed: Seed) -> str:
    """The seed operator's whole log (it writes to stderr: both streams of `docker service logs`)."""
    proc = subprocess.run(["docker", "service", "logs", "--raw", OPERATOR], env=seed.env(), capture_output=True,
                          text=True, timeout=120, check=True)
    return proc.stdout + proc.stderr


def courier_writes(seed: Seed) -> int:
    """How many times the operator created or updated the courier, by its own log."""
    return sum(1 for line in operator_log(seed).splitlines()
               if f"create service {COURIER}" in line or f"update service {COURIER} " in line)


def served_everywhere(seed: Seed, fingerprint: str) -> bool:
    return all(https_fingerprint(seed.lab.address(n), HOST) == fingerprint for n in seed.lab.lb_nodes)


def test_a_tls_host_added_rotated_and_removed_replaces_no_proxy_task(seed: Seed, tmp_path: Path) -> None:
    client = seed.client()
    tasks_before, version_before = seed.proxy_state()
    log(f"proxy tasks {sorted(tasks_before.values())}, version {version_before}")
    cert1, key1 = make_pair(tmp_path, "one")
    cert2, key2 = make_pair(tmp_path, "two")
    nodes = {n: seed.lab.address(n) for n in seed.lab.lb_nodes}
    figures: dict[str, float] = {}
    with Load(nodes, hosts=(DEMO_HOST,)) as load:
        time.sleep(3)  # steady load first
        client.secrets.create(name="sg-tls-cert-1", data=cert1)
        client.secrets.create(name="sg-tls-key-1", data=key1)
        t0 = time.monotonic()
        create_routed(client, SERVICE, {"com.docker.lb.hosts": HOST, "com.docker.lb.port": "8080",
                                        "com.docker.lb.ssl_cert": "sg-tls-cert-1",
                                        "com.docker.lb.ssl_key": "sg-tls-key-1"})
        wait_for(lambda: served_everywhere(seed, fingerprint_pem(cert1)), timeout=120,
                 what=f"HTTPS for {HOST} with the first certificate on every LB node")
        figures["added_s"] = round(time.monotonic() - t0, 2)
        log(f"{HOST} served over HTTPS on {sorted(nodes)} {figures['added_s']} s after the service was created")

        client.secrets.create(name="sg-tls-cert-2", data=cert2)
        client.secrets.create(name="sg-tls-key-2", data=key2)
        t0 = time.monotonic()
        seed.cli("service", "update", "--detach", "--label-add", "com.docker.lb.ssl_cert=sg-tls-cert-2",
                 "--label-add", "com.docker.lb.ssl_key=sg-tls-key-2", SERVICE)
        wait_for(lambda: served_everywhere(seed, fingerprint_pem(cert2)), timeout=120,
                 what=f"HTTPS for {HOST} with the rotated certificate on every LB node")
        figures["rotated_s"] = round(time.monotonic() - t0, 2)
        log(f"rotated certificate served everywhere {figures['rotated_s']} s after the label update")

        t0 = time.monotonic()
        docker_api.remove_service(client, SERVICE)
        wait_for(lambda: all(https_fingerprint(a, HOST) is None for a in nodes.values()), timeout=120,
                 what=f"{HOST} no longer served")
        figures["removed_s"] = round(time.monotonic() - t0, 2)
        # The courier lets go of the IDs once every proxy serves the config without them.
        wait_for(lambda: not (docker_api.inspect_service(client, COURIER)["Spec"]["TaskTemplate"]["ContainerSpec"]
                              .get("Secrets")), timeout=60, what="the courier to drop the removed host's secrets")
        # At rest: the converged courier is not written again pass after pass. (Its version moves by
        # itself while Swarm finishes its update, so the operator's own log is what is counted.)
        time.sleep(3)
        writes = courier_writes(seed)
        time.sleep(8)  # load after the last change too, and a few passes (PollInterval 3 s)
        assert courier_writes(seed) == writes, "the operator keeps writing a converged courier"
        figures["courier_writes"] = writes
    failed, total = load.failed_total()
    tasks_after, version_after = seed.proxy_state()
    log(f"figures {figures}; {failed}/{total} failed; per node "
        f"{ {n: (s.failed, s.total, s.longest_gap_s) for n, s in load.summary().items()} }; proxy version "
        f"{version_before} -> {version_after}; tasks kept {sorted(tasks_before) == sorted(tasks_after)}")
    assert failed == 0, [(r.node, r.reason) for r in load.failures()][:20]
    assert total > 0
    assert sorted(tasks_after) == sorted(tasks_before), "a proxy task was replaced"
    assert version_after == version_before, "the proxy service's spec was written"

    # No key material anywhere the Swarm API, the operator's log or the status shows.
    marks = key_marks(key1) + key_marks(key2)
    inspect = seed.cli("service", "inspect", PROXY, COURIER)
    operator_log_text = operator_log(seed)
    assert "courier" in operator_log_text or "certs" in operator_log_text, "the operator's log was not read"
    manager = next(m for m in seed.lab.managers
                   if seed.cli("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={OPERATOR}", node=m))
    container = seed.container_on(manager, OPERATOR)
    # Asked of the proxies themselves, from inside the operator's container (it holds the channel key).
    argv = ["/usr/bin/python3.11", "-m", "swarmgate", "status", "-c", "/config.toml", "--json"]  # the image's
    proc = subprocess.run(["docker", "exec", container, *argv],
                          env={**seed.env(), "DOCKER_HOST": seed.lab.node(manager).sock}, capture_output=True,
                          text=True, timeout=120, check=False)
    status = proc.stdout + proc.stderr
    log(f"swarmgate status --json (exit {proc.returncode}): {proc.stdout[:1500]} {proc.stderr[-1500:]}")
    assert proc.returncode == 0 and json.loads(proc.stdout)["clusters"]["default"]["all_current"] is True
    for where, text in (("service inspect", inspect), ("operator log", operator_log_text), ("status", status)):
        leaked = [m for m in marks if m in text]
        assert not leaked, f"key material in the {where}"
    assert "PRIVATE KEY" not in inspect + operator_log_text + status

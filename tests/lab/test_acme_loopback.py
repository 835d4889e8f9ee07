"""ACME end to end without a Swarm: the operator's own pieces against Pebble, on loopback.

The pure pass (`decide_pass`) renders the proxy's config with its stateless HTTP-01 location; a real
nginx serves it on a loopback address of this test's own, where Pebble's DNS sends every name. The
ACME worker orders off the test's thread with the account derived from a fixed secret; its outcome
becomes a `CreateCertificateSecret` whose data is written where the secret would be mounted; the
next pass names it, nginx reloads, and a TLS handshake by name verifies against Pebble's root.
Renewal at two thirds of the lifetime gives a new serial. No Docker: what Swarm does with the
secret is proved by tests/lab/test_acme.py.

Needs root (ports 80 and 443), nginx and Debian's `pebble` package; takes a few seconds.
"""

from __future__ import annotations

import datetime
import http.server
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from lab.pebble import CHALLTESTSRV, PEBBLE, Pebble, Settings, running
from swarmgate.models.routing.tls_secrets import SECRETS_DIR
from swarmgate.models.settings.config import Config, parse_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.acme.worker import AcmeWorker
from swarmgate.operator.planning import acme_account
from swarmgate.operator.planning.acme_plan import Outcome
from swarmgate.operator.planning.actions import CreateCertificateSecret
from swarmgate.operator.planning.decide import PassDecision, decide_pass
from swarmgate.renderers.validate import localized, nginx_binary
from tests.factories import node, service, swarm_secret, task
from tests.support import answer

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="nginx listens on ports 80 and 443"),
    pytest.mark.skipif(not (os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)),
                       reason="Debian's pebble package is not installed (scripts/install-deps.sh)"),
    pytest.mark.skipif(nginx_binary() is None, reason="needs nginx"),
]

PROXY = "127.0.80.2"  # the proxy's address: Pebble's DNS answers it for every name
HOST = "shop.acme.test"
SECRET = bytes(range(40, 72))
VALIDITY = 120
TOML = """
[Extensions.default]
  ProxyServiceName = "interlock-proxy"
  PublishMode = "host"
  HitlessServiceUpdate = false
  PublishedPort = 80
  PublishedSSLPort = 443
  [Extensions.default.Config]
    PidPath = "/var/run/proxy.pid"
"""


class Task(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        answer(self, b"the task\n")

    def log_message(self, *_: object) -> None:
        pass


@dataclass
class Proxy:
    """nginx on PROXY:80/443, serving what `load` gives it; secrets are files in `secrets`."""

    prefix: Path
    secrets: Path
    process: subprocess.Popen[bytes] | None = None

    def load(self, text: str) -> None:
        local = localized(text, self.prefix, None).replace(SECRETS_DIR, f"{self.secrets}/")
        for port in (80, 443):
            local = local.replace(f"listen {port}", f"listen {PROXY}:{port}")
        (self.prefix / "nginx.conf").write_text(local)
        binary = nginx_binary()
        assert binary is not None
        check = subprocess.run([binary, "-t", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                "-e", "stderr"], capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()
        if self.process is None:
            self.process = subprocess.Popen([binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                             "-e", "stderr", "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        else:
            self.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # the new workers

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def pebble() -> Iterator[Pebble]:
    with running(Settings(answer_ip=PROXY, validity_seconds=VALIDITY)) as ca:
        yield ca


@pytest.fixture(scope="module")
def task_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Task)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    prefix, secrets = tmp_path / "nginx", tmp_path / "secrets"
    prefix.mkdir()
    secrets.mkdir()
    running_proxy = Proxy(prefix, secrets)
    yield running_proxy
    running_proxy.stop()


def observed(task_port: int, *secrets: dict[str, object]) -> ObservedState:
    web = service("shop", {"com.docker.lb.hosts": HOST, "com.docker.lb.port": "8080", "swarmgate.acme": "true",
                           "com.docker.lb.ssl_only": "true"})
    return ObservedState.from_api(services=[web], tasks=[task(web, "w0", ports={8080: task_port})],
                                  nodes=[node("w0", "127.0.0.1")], secrets=list(secrets))


def order(worker: AcmeWorker, decision: PassDecision, pebble: Pebble) -> list[Outcome]:
    key = acme_account.account_key(SECRET, pebble.directory_url)
    assert worker.submit(decision.acme.orders, key)
    deadline = time.monotonic() + 30
    outcomes: list[Outcome] = []
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.1)
        outcomes = worker.drain()
    assert outcomes, "the worker brought nothing back in 30 s"
    return outcomes


def handshake(root: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection((PROXY, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=HOST) as tls:
        der = tls.getpeercert(binary_form=True)
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        answer = tls.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200") and b"the task" in answer
    assert der is not None
    return x509.load_der_x509_certificate(der)


def store(decision: PassDecision, proxy: Proxy) -> list[dict[str, object]]:
    """What applying the pass's certificate actions does: a secret, as its mount would show it."""
    created = [a for a in decision.actions if isinstance(a, CreateCertificateSecret)]
    for action in created:
        (proxy.secrets / action.name).write_bytes(action.data)
    return [swarm_secret(a.name, labels=a.labels) for a in created]


def test_a_host_gets_a_certificate_that_verifies_and_is_renewed(
        pebble: Pebble, proxy: Proxy, task_port: int, tmp_path: Path) -> None:
    config: Config = parse_config(f'ACMEDirectory = "{pebble.directory_url}"\n'
                                  f'ACMECABundle = "{pebble.ca_bundle}"\n' + TOML, source="t.toml")
    thumb = acme_account.thumbprint(acme_account.account_key(SECRET, pebble.directory_url))
    root = tmp_path / "root.pem"
    root.write_text(pebble.root_pem())
    worker = AcmeWorker(pebble.directory_url, ca_bundle=pebble.ca_bundle, timeout=20)
    worker.start()
    try:
        now = datetime.datetime.now(datetime.UTC)
        first = decide_pass(config, observed(task_port), now=now, acme_thumbprint=thumb)
        assert [o.host for o in first.acme.orders] == [HOST]
        proxy.load(first.desired.extensions[0].rendered.text)  # HTTP only, and the challenge answer
        started = time.monotonic()
        outcomes = order(worker, first, pebble)
        assert outcomes[0].issued is not None, outcomes[0].error
        second = decide_pass(config, observed(task_port), now=now, acme_thumbprint=thumb, memory=first.memory,
                             outcomes=outcomes)
        secrets = store(second, proxy)
        assert len(secrets) == 1
        now = datetime.datetime.now(datetime.UTC)  # a live pass's time: the certificate is valid from its issuance
        third = decide_pass(config, observed(task_port, *secrets), now=now, acme_thumbprint=thumb,
                            memory=second.memory)
        assert third.acme.orders == ()
        proxy.load(third.desired.extensions[0].rendered.text)
        leaf = handshake(root)
        took = time.monotonic() - started
        assert took < 10, f"first certificate served after {took:.1f} s"
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [HOST]

        # Two thirds into its life the host is due again; the renewed certificate replaces it.
        later = leaf.not_valid_before_utc + datetime.timedelta(seconds=VALIDITY * 2 / 3 + 1)
        due = decide_pass(config, observed(task_port, *secrets), now=later, acme_thumbprint=thumb,
                          memory=third.memory)
        assert [(o.host, o.reason) for o in due.acme.orders] == [(HOST, "renewal")]
        renewed = decide_pass(config, observed(task_port, *secrets), now=later, acme_thumbprint=thumb,
                              memory=due.memory, outcomes=order(worker, due, pebble))
        secrets += store(renewed, proxy)
        served = decide_pass(config, observed(task_port, *secrets), now=later, acme_thumbprint=thumb,
                             memory=renewed.memory)
        proxy.load(served.desired.extensions[0].rendered.text)
        assert handshake(root).serial_number != leaf.serial_number
    finally:
        worker.stop()

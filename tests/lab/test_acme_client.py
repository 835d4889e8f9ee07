"""The ACME client against a real ACME server: Pebble (lab/pebble.py), on this host's loopback.

No Swarm is needed: Pebble's DNS resolves every name to a loopback address of this test's own, where
a stateless HTTP-01 responder listens on port 80 and answers each token with `token.thumbprint`, as
the proxies will. The account key is derived from a fixed secret (planning/acme_account.py).

* A certificate for `shop.acme.test` is issued, its chain verifies against Pebble's root
  (`openssl verify`, and a real TLS handshake by name), and it lives the 300 s Pebble was told.
* The same secret gives the same account on the next issuance (the account URL is identical).
* A wrong answer, a hanging responder, an untrusted server and a closed port each end in one
  `AcmeError` with a one-line reason, within the time given.

Needs root (port 80) and Debian's `pebble` package; takes a few seconds.
"""

from __future__ import annotations

import http.server
import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab.pebble import CHALLTESTSRV, PEBBLE, Pebble, Settings, running
from swarmgate.models.routing.acme_hosts import CHALLENGE_PREFIX
from swarmgate.operator.acme.client import AcmeError, issue
from swarmgate.operator.planning.acme_account import account_key, key_authorization, thumbprint

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the HTTP-01 responder listens on port 80"),
    pytest.mark.skipif(not (os.access(PEBBLE, os.X_OK) and os.access(CHALLTESTSRV, os.X_OK)),
                       reason="Debian's pebble package is not installed (scripts/install-deps.sh)"),
]

# A loopback address of the test's own: its port 80 collides with nothing bound to 127.0.0.1.
RESPONDER = "127.0.80.1"
HOST = "shop.acme.test"
SECRET = bytes(range(100, 132))
EMAIL = "ops@acme.test"
VALIDITY = 300
TIMEOUT = 20.0


@dataclass
class Responder:
    """Answers `GET /.well-known/acme-challenge/<token>`; `mode` decides how."""

    thumbprint: str
    mode: str = "right"  # "right", "wrong", or "hang" (until the test ends)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(scope="module")
def pebble() -> Iterator[Pebble]:
    with running(Settings(answer_ip=RESPONDER, validity_seconds=VALIDITY)) as ca:
        yield ca


@pytest.fixture(scope="module")
def directory(pebble: Pebble) -> str:
    return pebble.directory_url


@pytest.fixture(scope="module")
def responder(directory: str) -> Iterator[Responder]:
    state = Responder(thumbprint(account_key(SECRET, directory)))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.headers.get("Host", ""), self.path))
            token = self.path.removeprefix(CHALLENGE_PREFIX)
            if not self.path.startswith(CHALLENGE_PREFIX):
                self.send_error(404)
                return
            if state.mode == "hang":
                state.release.wait(30)
            body = (key_authorization(token, state.thumbprint) if state.mode == "right" else f"{token}.wrong").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    try:
        server = http.server.ThreadingHTTPServer((RESPONDER, 80), Handler)
    except OSError as busy:
        pytest.skip(f"cannot listen on {RESPONDER}:80: {busy}")
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def answering(responder: Responder) -> Iterator[Responder]:
    """The responder, answering right unless the test says otherwise, with its request log cleared."""
    responder.mode = "right"
    responder.requests.clear()
    yield responder
    responder.mode = "right"
    responder.release.set()
    responder.release = threading.Event()


def test_issues_a_certificate_that_verifies_against_pebbles_root(
        pebble: Pebble, answering: Responder, tmp_path: Path) -> None:
    started = time.monotonic()
    issued = issue(pebble.directory_url, account_key(SECRET, pebble.directory_url), EMAIL, HOST,
                   pebble.ca_bundle, TIMEOUT)
    took = time.monotonic() - started
    assert took < 10, f"issuance took {took:.1f} s"

    # Pebble validated over HTTP-01, by name, at the responder.
    assert answering.requests and all(h.split(":")[0] == HOST for h, _ in answering.requests)
    chain = x509.load_pem_x509_certificates(issued.cert_chain_pem.encode())
    assert len(chain) >= 2
    leaf = chain[0]
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST]
    assert (issued.not_before, issued.not_after) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
    assert VALIDITY - 2 <= (issued.not_after - issued.not_before).total_seconds() <= VALIDITY
    # The fresh key is the certificate's, and it is never the account key.
    key = serialization.load_pem_private_key(issued.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf.public_key()
    assert key.public_key() != account_key(SECRET, pebble.directory_url).public_key()
    assert "PRIVATE" not in repr(issued)

    root = tmp_path / "root.pem"
    root.write_text(pebble.root_pem())
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "intermediates.pem").write_text(
        "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain[1:]))
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(root), "-untrusted",
                             str(tmp_path / "intermediates.pem"), str(tmp_path / "leaf.pem")],
                            capture_output=True, text=True, timeout=30, check=False)
    assert verify.returncode == 0, verify.stderr + verify.stdout
    assert handshake(issued.cert_chain_pem, issued.key_pem, root, tmp_path) == HOST


def handshake(chain_pem: str, key_pem: str, root: Path, folder: Path) -> str:
    """Serves the chain on loopback and connects by name, trusting only Pebble's root: returns the
    name the client verified."""
    (folder / "served.pem").write_text(chain_pem + key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "served.pem")
    client_context = ssl.create_default_context(cafile=str(root))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        accepted: list[BaseException] = []

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError) as failed:
                accepted.append(failed)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client_context.wrap_socket(raw, server_hostname=HOST) as tls:
            # `create_default_context` checks the name: the handshake fails unless the chain is
            # trusted and names HOST.
            peer = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
        thread.join(10)
    assert not accepted, accepted
    assert peer is not None
    served = x509.load_der_x509_certificate(peer)
    return str(served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
               .get_values_for_type(x509.DNSName)[0])


def test_the_same_secret_finds_the_same_account(pebble: Pebble, answering: Responder) -> None:
    first = issue(pebble.directory_url, account_key(SECRET, pebble.directory_url), EMAIL, HOST,
                  pebble.ca_bundle, TIMEOUT)
    # What a restarted operator, or one on another manager, does: derive the key again.
    again = issue(pebble.directory_url, account_key(bytes(SECRET), pebble.directory_url), EMAIL, HOST,
                  pebble.ca_bundle, TIMEOUT)
    assert first.account_url == again.account_url
    assert first.cert_chain_pem != again.cert_chain_pem  # a new order and a new certificate
    # Another secret is another account (its proxies would answer with its thumbprint).
    other_key = account_key(bytes(32), pebble.directory_url)
    answering.thumbprint = thumbprint(other_key)
    try:
        other = issue(pebble.directory_url, other_key, EMAIL, HOST, pebble.ca_bundle, TIMEOUT)
    finally:
        answering.thumbprint = thumbprint(account_key(SECRET, pebble.directory_url))
    assert other.account_url != first.account_url


def test_a_wrong_answer_fails_with_its_reason_in_bounded_time(pebble: Pebble, answering: Responder) -> None:
    answering.mode = "wrong"
    started = time.monotonic()
    with pytest.raises(AcmeError) as failed:
        issue(pebble.directory_url, account_key(SECRET, pebble.directory_url), EMAIL, HOST, pebble.ca_bundle,
              TIMEOUT)
    took = time.monotonic() - started
    reason = str(failed.value)
    assert took < 10, f"failing took {took:.1f} s"
    assert answering.requests, "Pebble never asked the responder"
    assert reason.startswith(f"validation of {HOST} failed: unauthorized"), reason
    assert "\n" not in reason and "PRIVATE" not in reason


def test_a_hanging_responder_ends_at_the_timeout(pebble: Pebble, answering: Responder) -> None:
    answering.mode = "hang"
    started = time.monotonic()
    with pytest.raises(AcmeError, match="timed out"):
        issue(pebble.directory_url, account_key(SECRET, pebble.directory_url), EMAIL, HOST, pebble.ca_bundle, 3.0)
    took = time.monotonic() - started
    assert 3.0 <= took < 6.0, f"a 3 s issuance took {took:.1f} s"


def test_an_untrusted_server_is_refused(pebble: Pebble) -> None:
    with pytest.raises(AcmeError, match="not trusted"):
        issue(pebble.directory_url, account_key(SECRET, pebble.directory_url), EMAIL, HOST, None, 5.0)


def test_a_closed_port_is_an_acme_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{probe.getsockname()[1]}/dir"
    started = time.monotonic()
    with pytest.raises(AcmeError, match="cannot connect"):
        issue(closed, account_key(SECRET, closed), EMAIL, HOST, None, 5.0)
    assert time.monotonic() - started < 5.0

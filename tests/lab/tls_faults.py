"""The TLS rows of `make faults` (bench only; does I/O through tests/lab/seed_deployment.py).

A TLS host added, its certificate rotated, then removed, under the same steady load to demo.local
on every LB node as every other row, judged by the same bar (tests/lab/faults.py's `problems`): not
one failed request, no proxy task replaced, the proxy service's spec version unchanged. `make test`
proves the same in tests/lab/test_tls_hitless.py (with the key-material checks); this row puts the
figures in the fault table beside the operator faults.

Not here: ACME across an operator restart. The seed's operator runs as a Swarm service and would need
Pebble's listener CA mounted into it; tests/lab/test_acme.py proves it with a host-process operator
(no order on Pebble after a restart or a leader failover).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import docker.errors

from tests import docker_api
from tests.lab import http
from tests.lab.faults import Result, Spec, Undo, Windows
from tests.lab.seed_deployment import Seed
from tests.support import wait_for


def _pair(folder: Path, host: str, tag: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for `host` and its key (PEM), made with openssl."""
    cert, key = folder / f"{tag}.crt", folder / f"{tag}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert.read_bytes(), key.read_bytes()


def _fingerprint(address: str, host: str) -> str | None:
    """The sha256 of the certificate an LB node shows for `host` (self-signed: not verified)."""
    http.assert_lab_route(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, 443), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def _served(seed: Seed, host: str, pem: bytes | None) -> bool:
    want = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.decode())).hexdigest() if pem is not None else None
    return all(_fingerprint(seed.lab.address(n), host) == want for n in seed.lab.lb_nodes)


def tls_host_lifecycle(seed: Seed, result: Result, windows: Windows) -> Undo:
    name = seed.name("tls")
    host = f"{name}.local"
    client = seed.client()
    secrets = [f"{name}-{part}-{n}" for n in (1, 2) for part in ("cert", "key")]
    with tempfile.TemporaryDirectory() as tmp:
        cert1, key1 = _pair(Path(tmp), host, "one")
        cert2, key2 = _pair(Path(tmp), host, "two")
    for secret, data in zip(secrets, (cert1, key1, cert2, key2), strict=True):
        client.secrets.create(name=secret, data=data)
    t0 = time.monotonic()
    seed.create_route(name, {"com.docker.lb.hosts": host, "com.docker.lb.port": "8080",
                             "com.docker.lb.ssl_cert": secrets[0], "com.docker.lb.ssl_key": secrets[1]})
    wait_for(lambda: _served(seed, host, cert1), timeout=windows.recovery_timeout, what=f"HTTPS for {host}")
    added = time.monotonic() - t0
    t0 = time.monotonic()
    seed.cli("service", "update", "--detach", "--label-add", f"com.docker.lb.ssl_cert={secrets[2]}",
             "--label-add", f"com.docker.lb.ssl_key={secrets[3]}", name)
    wait_for(lambda: _served(seed, host, cert2), timeout=windows.recovery_timeout, what=f"{host} rotated")
    rotated = time.monotonic() - t0
    t0 = time.monotonic()
    docker_api.remove_service(client, name)
    wait_for(lambda: _served(seed, host, None), timeout=windows.recovery_timeout, what=f"{host} removed")
    removed = time.monotonic() - t0
    result.notes.append(f"TLS host {host}: served on every LB node {added:.1f} s after the service was created, "
                        f"the rotated certificate {rotated:.1f} s after the label update, gone {removed:.1f} s "
                        "after the service was removed")

    def undo() -> None:
        # The courier lets go of the secrets once every proxy serves the config without them.
        deadline = time.monotonic() + 60
        for secret in secrets:
            while True:
                try:
                    client.secrets.get(secret).remove()
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    return undo


SCENARIOS: tuple[Spec, ...] = (
    Spec("tls-host-lifecycle", "TLS host added, its certificate rotated, removed (certificate courier)",
         tls_host_lifecycle),
)

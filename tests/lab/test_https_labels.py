"""The HTTPS labels on the seed deployment, through both LB nodes (real engines, real nginx, curl).

One seed deployment (`scripts/demo.sh up`) is shared by the tests here. Next to the seed's `demo`:

* `https-secure` (the demo image): its own certificate from Swarm secrets, `ssl_only`, HSTS;
* `https-empty`: the same labels and no task, so its route answers 503;
* three services of the lab's nginx image that serve only TLS, with a certificate signed by a test
  CA: `ssl_backend` not verified (`https-tlsonly`), verified against that CA (`https-verified`),
  and verified against another CA (`https-wrongca`), which must fail alone.

Every service publishes its port in host mode, as the seed's `demo` does. Requests go only to the
lab's LB nodes (`curl --resolve`, after checking the kernel routes them through the lab bridge).
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from docker.models.configs import Config
from docker.models.secrets import Secret

from tests import docker_api
from tests.lab import http, shared_seed
from tests.lab.cluster import Lab
from tests.lab.seed_deployment import Seed
from tests.support import wait_for

# It removes the seed's deployment itself: objects of its own go only once the proxy has.
pytestmark = [pytest.mark.lab, pytest.mark.shared_seed(keeps=False)]

SECURE, EMPTY = "secure.https.local", "empty.https.local"
TLSONLY, VERIFIED, WRONGCA = "tlsonly.https.local", "verified.https.local", "wrongca.https.local"
# A TLS-only backend: it answers with the name the proxy sent in SNI, so the test sees proxy_ssl_name.
BACKEND_CONF = """user nginx;
events {}
http {
    server {
        listen 8443 ssl;
        ssl_certificate /run/secrets/https-backend.crt;
        ssl_certificate_key /run/secrets/https-backend.key;
        location / {
            return 200 "tls backend sni=$ssl_server_name\\n";
        }
    }
}
"""


@dataclass(frozen=True)
class Response:
    version: str
    status: int
    headers: dict[str, str]
    body: str


def curl(address: str, url: str, host: str, *, cafile: Path | None = None, http2: bool = False) -> Response:
    """One request to an LB node with `host` resolved to it (SNI and Host both `host`)."""
    http.assert_lab_route(address)
    port = 443 if url.startswith("https://") else 80
    args = ["curl", "-sS", "--max-time", "5", "--resolve", f"{host}:{port}:{address}", "-D", "-",
            "-w", "\n%{http_version}"]
    args += ["--cacert", str(cafile)] if cafile else []
    args += ["--http2"] if http2 else ["--http1.1"]
    # Bytes: text mode would turn the header's CRLFs into LFs.
    proc = subprocess.run([*args, url], capture_output=True, timeout=15, check=False)
    if proc.returncode != 0:
        raise OSError(f"curl {url} via {address}: {proc.stderr.decode(errors='replace').strip()}")
    head, _, rest = proc.stdout.decode(errors="replace").partition("\r\n\r\n")
    body, _, version = rest.rpartition("\n")
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return Response(version.strip(), int(lines[0].split()[1]), headers, body)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    cert, key = directory / f"{host}.crt", directory / f"{host}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
             "-addext", f"subjectAltName=DNS:{host}", "-keyout", str(key), "-out", str(cert))
    return cert, key


def _issued(directory: Path, ca: tuple[Path, Path], names: list[str]) -> tuple[Path, Path]:
    """A certificate for `names`, signed by `ca`."""
    cert, key, csr = directory / "backend.crt", directory / "backend.key", directory / "backend.csr"
    ext = directory / "backend.ext"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", str(key),
             "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert))
    return cert, key


def _remove_https_objects(client: docker.DockerClient) -> None:
    for svc in client.services.list():
        if (svc.name or "").startswith("https-"):
            docker_api.remove(svc)
    # A secret or config is removable once the services' tasks that used it are gone.
    objects: list[Secret | Config] = [*client.secrets.list(), *client.configs.list()]
    for obj in objects:
        if (obj.name or "").startswith("https-"):
            with contextlib.suppress(TimeoutError):
                wait_for(functools.partial(_removed, obj), timeout=60, what=f"{obj.name} removed")


def _removed(obj: Secret | Config) -> bool:
    try:
        obj.remove()
    except docker.errors.NotFound:
        return True
    return True


@pytest.fixture(scope="module")
def seed(lab: Lab) -> Iterator[Seed]:
    assert len(lab.lb_nodes) >= 2, "the seed needs two load-balancer nodes"
    s = Seed(lab, log=lambda msg: print(f"[https] {msg}", flush=True))
    shared_seed.acquire(s)
    _remove_https_objects(s.client())  # what an interrupted run left
    try:
        yield s
    finally:
        # The proxy mounts some of the secrets: it goes first (demo.sh down), then they can.
        s.undeploy()
        _remove_https_objects(s.client())
        s.close()


@pytest.fixture(scope="module")
def certs(seed: Seed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("https")
    front_cert, front_key = _self_signed(tmp, SECURE)
    empty_cert, empty_key = _self_signed(tmp, EMPTY)
    ca = _self_signed(tmp, "https-test-ca")
    other_ca, _ = _self_signed(tmp, "https-other-ca")
    backend_cert, backend_key = _issued(tmp, ca, [TLSONLY, VERIFIED, WRONGCA])
    (tmp / "backend.conf").write_text(BACKEND_CONF)
    for name, path in (("https-secure.crt", front_cert), ("https-secure.key", front_key),
                       ("https-empty.crt", empty_cert), ("https-empty.key", empty_key),
                       ("https-ca.pem", ca[0]), ("https-other-ca.pem", other_ca),
                       ("https-backend.crt", backend_cert), ("https-backend.key", backend_key)):
        seed.cli("secret", "create", name, str(path))
    seed.cli("config", "create", "https-backend.conf", str(tmp / "backend.conf"))

    def create(name: str, labels: dict[str, str], *, image: str = "swarmgate/demo:lab", port: int = 8080,
               replicas: int = 1, more: tuple[str, ...] = ()) -> None:
        args = ["service", "create", "--detach", "--no-resolve-image", "--name", name, "--replicas", str(replicas),
                "--publish", f"mode=host,target={port}", "--env", f"METADATA={name}", *more]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        seed.cli(*args, image)

    lb = "com.docker.lb."
    front = {f"{lb}ssl_only": "true", "swarmgate.hsts": "365d", "swarmgate.hsts_subdomains": "true"}
    create("https-secure", {f"{lb}hosts": SECURE, f"{lb}port": "8080", f"{lb}ssl_cert": "https-secure.crt",
                            f"{lb}ssl_key": "https-secure.key", **front})
    create("https-empty", {f"{lb}hosts": EMPTY, f"{lb}port": "8080", f"{lb}ssl_cert": "https-empty.crt",
                           f"{lb}ssl_key": "https-empty.key", **front}, replicas=0)
    backend = ("--secret", "https-backend.crt", "--secret", "https-backend.key",
               "--config", "src=https-backend.conf,target=/etc/nginx/nginx.conf")
    tls = {f"{lb}port": "8443", f"{lb}ssl_backend": "true"}
    create("https-tlsonly", {f"{lb}hosts": TLSONLY, **tls}, image="swarmgate/nginx:lab", port=8443, more=backend)
    create("https-verified", {f"{lb}hosts": VERIFIED, **tls, f"{lb}ssl_backend_tls_verify": "required",
                              "swarmgate.ssl_backend_ca": "https-ca.pem"},
           image="swarmgate/nginx:lab", port=8443, more=backend)
    create("https-wrongca", {f"{lb}hosts": WRONGCA, **tls, f"{lb}ssl_backend_tls_verify": "required",
                             "swarmgate.ssl_backend_ca": "https-other-ca.pem"},
           image="swarmgate/nginx:lab", port=8443, more=backend)
    yield {SECURE: front_cert, EMPTY: empty_cert}


def _status(address: str, url: str, host: str, cafile: Path | None = None) -> int | str:
    try:
        return curl(address, url, host, cafile=cafile).status
    except OSError as exc:
        return str(exc)[-80:]


def _answers(seed: Seed, certs: dict[str, Path]) -> tuple[bool, dict[str, dict[str, int | str]]]:
    """Whether every LB node answers each route as its labels ask, and what each node answered."""
    expected: dict[tuple[str, str], int] = {
        (f"https://{SECURE}/ping", SECURE): 200, (f"http://{SECURE}/ping", SECURE): 301,
        (f"https://{EMPTY}/", EMPTY): 503, (f"http://{TLSONLY}/", TLSONLY): 200,
        (f"http://{VERIFIED}/", VERIFIED): 200, (f"http://{WRONGCA}/", WRONGCA): 502,
    }
    seen = {node: {url: _status(seed.lab.address(node), url, host, certs.get(host))
                   for (url, host) in expected} for node in seed.lab.lb_nodes}
    return all(seen[node][url] == status for node in seen for (url, _), status in expected.items()), seen


def test_https_labels_through_every_lb_node(seed: Seed, certs: dict[str, Path]) -> None:
    version = subprocess.run(["curl", "-V"], capture_output=True, text=True, check=True).stdout
    assert "HTTP2" in version.split("Features:", 1)[1], "this curl cannot speak HTTP/2"
    last: list[object] = []

    def routed() -> bool:
        ok, seen = _answers(seed, certs)
        last[:] = [seen]
        return ok

    wait_for(routed, timeout=240, interval=1.0, what=lambda: f"every HTTPS route on every LB node: {last}")
    hsts = "max-age=31536000; includeSubDomains"
    for node in seed.lab.lb_nodes:
        address = seed.lab.address(node)
        # ssl_only: plain HTTP is sent to HTTPS, with the path; ACME's HTTP-01 path still reaches the task.
        r = curl(address, f"http://{SECURE}/ping?x=1", SECURE)
        assert r.status == 301 and r.headers["location"] == f"https://{SECURE}/ping?x=1", (node, r)
        assert "strict-transport-security" not in r.headers, (node, r.headers)  # HSTS over HTTPS only
        r = curl(address, f"http://{SECURE}/.well-known/acme-challenge/token", SECURE)
        assert r.status != 301 and r.headers.get("x-upstream-addr", "-") != "-", (node, r)
        # Over HTTPS: the task answers, HTTP/2 is negotiated, and HSTS is sent.
        r = curl(address, f"https://{SECURE}/ping", SECURE, cafile=certs[SECURE], http2=True)
        assert (r.version, r.status) == ("2", 200) and '"metadata":"https-secure"' in r.body, (node, r)
        assert r.headers["strict-transport-security"] == hsts, (node, r.headers)
        r = curl(address, f"https://{SECURE}/ping", SECURE, cafile=certs[SECURE])
        assert (r.version, r.status) == ("1.1", 200), (node, r)
        # nginx's own 503 (no task) carries HSTS too.
        r = curl(address, f"https://{EMPTY}/", EMPTY, cafile=certs[EMPTY], http2=True)
        assert r.status == 503 and r.headers["strict-transport-security"] == hsts, (node, r)
        # ssl_backend: the tasks serve only TLS; the proxy sends the host name as SNI.
        for host in (TLSONLY, VERIFIED):
            r = curl(address, f"http://{host}/", host)
            assert r.status == 200 and r.body.strip() == f"tls backend sni={host}", (node, host, r)
        # Verified against the wrong CA: 502 for that host only; the others, and the seed's demo, answer.
        r = curl(address, f"http://{WRONGCA}/", WRONGCA)
        assert r.status == 502, (node, r)
        assert http.get(address, "/ping", host="demo.local").status == 200, node
    seed.log(f"every HTTPS route answered as its labels ask on {', '.join(seed.lab.lb_nodes)}")


def test_ssl_only_without_tls_sets_aside_only_its_service(seed: Seed, certs: dict[str, Path]) -> None:
    lb = "com.docker.lb."
    for name, more in (("https-bad", ("--label", f"{lb}ssl_only=true")), ("https-good", ())):
        seed.cli("service", "create", "--detach", "--no-resolve-image", "--name", name, "--publish",
                 "mode=host,target=8080", "--env", f"METADATA={name}", "--label", f"{lb}hosts={name}.https.local",
                 "--label", f"{lb}port=8080", *more, "swarmgate/demo:lab")
    # The pass that routes https-good has judged https-bad too.
    wait_for(lambda: all(seed.answers(n, "https-good.https.local", metadata="https-good") for n in seed.lab.lb_nodes),
             timeout=90, what="https-good through every LB node")
    for node in seed.lab.lb_nodes:
        address = seed.lab.address(node)
        assert http.get(address, "/ping", host="https-bad.https.local").status == 503, node
        assert _status(address, f"http://{VERIFIED}/", VERIFIED) == 200, node
        assert _status(address, f"https://{SECURE}/ping", SECURE, certs[SECURE]) == 200, node

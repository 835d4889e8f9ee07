"""The HTTPS labels in a real nginx on loopback: the rendered config (the default template), its
secrets as files, tasks that are Python servers on 127.0.0.1, and curl as the client.

What a golden file cannot show is checked here: the 301 of `ssl_only` (but ACME's path), HSTS on a
proxied 200 and on nginx's own 502 and 503 (nginx drops inherited `add_header`s in a location with
its own), TLS to the tasks with the host name as SNI, verification against the right and a wrong CA,
and HTTP/2 negotiated by ALPN. Traffic stays on loopback.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmgate.models.routing.backend_ca import unusable_ca_ids, unusable_ca_names
from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.routing.tls_secrets import SECRETS_DIR
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary
from tests.factories import node, service, swarm_secret, task
from tests.support import answer

INFO = "swarmgate/0.1.0 linux/amd64"
SECURE, EMPTY, DOWN = "secure.local", "empty.local", "down.local"
TLS_TASKS, VERIFIED, WRONG_CA = "tls-tasks.local", "verified.local", "wrong-ca.local"

pytestmark = pytest.mark.skipif(nginx_binary() is None or shutil.which("curl") is None,
                                reason="needs nginx and curl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert))
    return cert, key


def issued(directory: Path, ca: tuple[Path, Path], names: list[str]) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"tasks.{s}" for s in ("crt", "key", "csr", "ext"))
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", str(key),
            "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial", "-days",
            "1", "-extfile", str(ext), "-out", str(cert))
    return cert, key


class Task(http.server.BaseHTTPRequestHandler):
    """A task: answers 200 with what it saw (scheme and SNI)."""

    def do_GET(self) -> None:
        sni = getattr(self.connection, "sni", None)
        body = f"task {'tls' if sni is not None or isinstance(self.connection, ssl.SSLSocket) else 'plain'} " \
               f"sni={sni} path={self.path}\n".encode()
        answer(self, body)

    def log_message(self, *_: object) -> None:
        pass


def serve(tls: tuple[Path, Path] | None) -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Task)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))

        def remember_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
            sock.sni = name  # type: ignore[union-attr]

        context.sni_callback = remember_sni
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


@dataclass(frozen=True)
class Proxy:
    http_port: int
    https_port: int
    certs: dict[str, Path]
    text: str


def lb(hosts: str, **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("https-loopback")
    secrets = tmp / "secrets"
    secrets.mkdir()
    front = self_signed(secrets, SECURE)
    empty_front = self_signed(secrets, EMPTY)
    down_front = self_signed(secrets, DOWN)
    ca = self_signed(tmp, "test-ca")
    other_ca = self_signed(tmp, "other-ca")
    shutil.copy(ca[0], secrets / "ca.pem")
    shutil.copy(other_ca[0], secrets / "other-ca.pem")
    tasks_tls = issued(tmp, ca, [TLS_TASKS, VERIFIED, WRONG_CA])
    plain, plain_port = serve(None)
    tls, tls_port = serve(tasks_tls)
    closed_port = free_port()  # nothing listens: nginx's own 502

    hsts = {"swarmgate.hsts": "365d", "swarmgate.hsts_subdomains": "true"}
    verify = {"com.docker.lb.ssl_backend_tls_verify": "required"}
    specs = [
        (service("secure", {**lb(SECURE, ssl_cert=f"{SECURE}.crt", ssl_key=f"{SECURE}.key", ssl_only="true"),
                            **hsts}), plain_port),
        (service("empty", {**lb(EMPTY, ssl_cert=f"{EMPTY}.crt", ssl_key=f"{EMPTY}.key"), **hsts}), None),
        (service("down", {**lb(DOWN, ssl_cert=f"{DOWN}.crt", ssl_key=f"{DOWN}.key"), **hsts}), closed_port),
        (service("tls-tasks", lb(TLS_TASKS, ssl_backend="true")), tls_port),
        (service("verified", {**lb(VERIFIED, ssl_backend="true"), **verify, "swarmgate.ssl_backend_ca": "ca.pem"}),
         tls_port),
        (service("wrong-ca", {**lb(WRONG_CA, ssl_backend="true"), **verify,
                              "swarmgate.ssl_backend_ca": "other-ca.pem"}), tls_port),
    ]
    observed = ObservedState.from_api(
        services=[s for s, _ in specs],
        tasks=[task(s, "wrk-0", ports={8080: port}) for s, port in specs if port is not None],
        nodes=[node("wrk-0", "127.0.0.1")],
        secrets=[swarm_secret(p.name) for p in secrets.iterdir()])
    http_port, https_port = free_port(), free_port()
    ext = Extension(name="default", publish_mode="host", hitless_service_update=False, target_port=http_port,
                    published_port=http_port, target_ssl_port=https_port, published_ssl_port=https_port)
    table = build_route_table(observed, ext)
    assert table.set_aside == ()
    text = render_nginx(ext, table, server_info=INFO).text
    prefix = tmp / "nginx"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    local = localized(text, prefix, None).replace(SECRETS_DIR, f"{secrets}/")
    # Listen on loopback only.
    for port in (http_port, https_port):
        local = local.replace(f"listen {port}", f"listen 127.0.0.1:{port}")
    conf.write_text(local)
    binary = nginx_binary()
    assert binary is not None
    nginx = subprocess.Popen([binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", https_port), timeout=1).close()
                break
            except OSError:
                assert nginx.poll() is None, nginx.communicate()[1]
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield Proxy(http_port, https_port, {SECURE: front[0], EMPTY: empty_front[0], DOWN: down_front[0]}, text)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        plain.shutdown()
        tls.shutdown()


@dataclass(frozen=True)
class Answer:
    version: str
    status: int
    headers: dict[str, str]
    body: str


def curl(proxy: Proxy, host: str, path: str = "/", *, https: bool = False, http2: bool = False) -> Answer:
    port = proxy.https_port if https else proxy.http_port
    url = f"{'https' if https else 'http'}://{host}:{port}{path}"
    args = ["curl", "-sS", "--max-time", "10", "--resolve", f"{host}:{port}:127.0.0.1", "-D", "-",
            "-w", "\n%{http_version}", "--http2" if http2 else "--http1.1"]
    if https:
        args += ["--cacert", str(proxy.certs[host])]
    # Bytes: text mode would turn the header's CRLFs into LFs.
    out = subprocess.run([*args, url], capture_output=True, timeout=20, check=True).stdout.decode()
    head, _, rest = out.partition("\r\n\r\n")
    body, _, version = rest.rpartition("\n")
    lines = head.split("\r\n")
    return Answer(version, int(lines[0].split()[1]),
                  {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}, body)


HSTS = "max-age=31536000; includeSubDomains"


def test_ssl_only_redirects_http_to_the_https_port_but_acme_challenges(proxy: Proxy) -> None:
    r = curl(proxy, SECURE, "/a/b?c=1")
    assert r.status == 301 and r.headers["location"] == f"https://{SECURE}:{proxy.https_port}/a/b?c=1", r
    assert "strict-transport-security" not in r.headers
    r = curl(proxy, SECURE, "/.well-known/acme-challenge/token-1")
    assert r.status == 200 and r.body.startswith("task plain") and "path=/.well-known/acme-challenge/token-1" in r.body


def test_hsts_on_a_proxied_200_and_on_nginxs_own_502_and_503_over_http2(proxy: Proxy) -> None:
    ok = curl(proxy, SECURE, "/x", https=True, http2=True)
    assert (ok.version, ok.status) == ("2", 200) and ok.body.startswith("task plain"), ok
    down = curl(proxy, DOWN, https=True, http2=True)
    empty = curl(proxy, EMPTY, https=True, http2=True)
    assert (down.status, empty.status) == (502, 503)
    for reply in (ok, down, empty):
        assert reply.headers["strict-transport-security"] == HSTS, reply.headers
        assert reply.headers["x-request-id"], "the location's own headers are still there"
    assert curl(proxy, SECURE, "/x", https=True).version == "1.1"


def test_tls_to_the_tasks_sends_the_host_as_sni_and_verifies_only_with_the_right_ca(proxy: Proxy) -> None:
    for host in (TLS_TASKS, VERIFIED):
        r = curl(proxy, host)
        assert r.status == 200 and r.body.startswith(f"task tls sni={host} "), (host, r)
    assert curl(proxy, WRONG_CA).status == 502
    # ... and that host alone: the others still answer.
    assert curl(proxy, VERIFIED).status == 200 and curl(proxy, SECURE, "/x", https=True).status == 200


def test_http2_is_off_with_the_extension_key() -> None:
    one = service("one", lb("one.local", ssl_cert="c", ssl_key="k"))
    observed = ObservedState.from_api(services=[one], tasks=[task(one, "wrk-0", ports={8080: 30000})],
                                      nodes=[node("wrk-0", "10.0.0.1")], secrets=[swarm_secret("c"), swarm_secret("k")])
    for http2, listen in ((True, "listen 443 ssl http2;"), (False, "listen 443 ssl;")):
        ext = Extension(name="default", publish_mode="host", HTTP2=http2)  # type: ignore[call-arg]
        text = render_nginx(ext, build_route_table(observed, ext), server_info=INFO).text
        assert listen in text and ("http2" in text) == http2


# ---- A CA bundle nginx cannot load: its real message names the secret, and only that one ----

@pytest.mark.parametrize(("content", "blamed"), [
    pytest.param("not a certificate\n", True, id="not-pem"),
    pytest.param("", True, id="empty"),
    pytest.param(None, False, id="not-mounted-blames-no-secret"),
])
def test_unusable_ca_names_come_from_real_nginx_messages(content: str | None, blamed: bool, tmp_path: Path) -> None:
    if content is not None:
        (tmp_path / "bad-ca.pem").write_text(content)
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ access_log off;\n"
                    "  server { listen 127.0.0.1:18998; location / { proxy_pass https://127.0.0.1:1;\n"
                    f"    proxy_ssl_verify on; proxy_ssl_trusted_certificate {tmp_path}/bad-ca.pem; }} }}\n}}\n")
    binary = nginx_binary()
    assert binary is not None
    result = subprocess.run([binary, "-t", "-q", "-p", str(tmp_path), "-c", str(conf)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    message = result.stderr.replace(f"{tmp_path}/", SECRETS_DIR)
    assert unusable_ca_names(message) == ({"bad-ca.pem"} if blamed else set()), message
    spec = {"TaskTemplate": {"ContainerSpec": {"Secrets": [
        {"File": {"Name": f"{SECRETS_DIR}bad-ca.pem"}, "SecretName": "bad-ca.pem", "SecretID": "id-ca"}]}}}
    assert unusable_ca_ids(message, spec) == ({"id-ca"} if blamed else set())

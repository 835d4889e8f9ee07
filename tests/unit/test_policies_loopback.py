"""The policy labels in a real nginx on loopback: the rendered config (the default template), its
htpasswd file, tasks that are Python servers on 127.0.0.1, and http.client as the client.

What a golden file cannot show: 401 without the password and 200 with it, 403 for a denied address,
429 past the rate, 413 past the body size, the custom 503 page, a weighted split, a header canary,
and an `HTTPOptions` header on a proxied 200, on nginx's own 503 and on an unknown host's 503.
Traffic stays on loopback.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.routing.tls_secrets import SECRETS_DIR
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary
from tests.factories import node, service, swarm_config, swarm_secret, task
from tests.unit.test_https_loopback import free_port

INFO = "swarmgate/0.1.0 linux/amd64"
PAGE = "<html><body><h1>resting</h1><p>costs $0</p></body></html>\n"
FRAME = ("X-Frame-Options", "DENY")

pytestmark = pytest.mark.skipif(nginx_binary() is None or shutil.which("openssl") is None,
                                reason="needs nginx and openssl")


class Named(http.server.BaseHTTPRequestHandler):
    """A task that answers 200 with its service's name (the server's `name`)."""

    def do_GET(self) -> None:
        body = f"{getattr(self.server, 'name', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *_: object) -> None:
        pass


def serve(name: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Named)
    server.name = name  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def lb(host: str, **own: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": host, "com.docker.lb.port": "8080", **{f"swarmgate.{k}": v for k, v in own.items()}}


def wait_listening(nginx: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert nginx.poll() is None, nginx.communicate()[1]
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)


@contextlib.contextmanager
def running_nginx(conf: str, prefix: Path, port: int) -> Iterator[None]:
    """The machine's nginx on `conf` (already localized to `prefix`), until the block ends; `port` is
    where it must listen before the block starts."""
    (prefix / "nginx.conf").write_text(conf)
    binary = nginx_binary()
    assert binary is not None
    nginx = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr",
                              "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        wait_listening(nginx, port)
        yield
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


@dataclass(frozen=True)
class Proxy:
    port: int
    text: str


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    tmp = tmp_path_factory.mktemp("policies-loopback")
    secrets = tmp / "secrets"
    secrets.mkdir()
    hashed = subprocess.run(["openssl", "passwd", "-apr1", "secret"], capture_output=True, text=True, check=True,
                            timeout=30).stdout.strip()
    (secrets / "users").write_text(f"alice:{hashed}\n")
    names = ["auth", "limits", "deny", "stable", "minor", "beta"]
    servers = {name: serve(name) for name in names}
    specs = [
        service("auth", lb("auth.local", auth_secret="users", max_body_size="1k"), created_at="2026-01-01T00:00:00Z"),
        service("limits", lb("limits.local", rate_limit="5r/s", rate_burst="3")),
        service("deny", lb("deny.local", deny="127.0.0.0/8")),
        service("down", lb("down.local", error_page_503="sorry")),
        service("stable", lb("split.local", weight="90"), created_at="2026-01-01T00:00:00Z"),
        service("minor", lb("split.local", weight="10"), created_at="2026-02-01T00:00:00Z"),
        service("beta", lb("split.local", canary="header:X-Canary=beta"), created_at="2026-03-01T00:00:00Z"),
    ]
    observed = ObservedState.from_api(
        services=specs, tasks=[task(s, "wrk-0", ports={8080: servers[s["Spec"]["Name"]][1]})
                               for s in specs if s["Spec"]["Name"] in servers],
        nodes=[node("wrk-0", "127.0.0.1")], secrets=[swarm_secret("users")],
        configs=[swarm_config("sorry", PAGE.encode(), labels={"swarmgate.error-page": "true"})])
    port = free_port()
    ext = Extension.model_validate({
        "name": "default", "PublishMode": "host", "HitlessServiceUpdate": False, "TargetPort": port,
        "PublishedPort": port, "TargetSSLPort": free_port(), "PublishedSSLPort": 443,
        "Config": {"HTTPOptions": [f"add_header {FRAME[0]} {FRAME[1]} always"]}})
    table = build_route_table(observed, ext)
    assert table.set_aside == ()
    text = render_nginx(ext, table, server_info=INFO).text
    prefix = tmp / "nginx"
    prefix.mkdir()
    local = localized(text, prefix, None).replace(SECRETS_DIR, f"{secrets}/")
    local = local.replace(f"listen {port}", f"listen 127.0.0.1:{port}").replace(
        f"listen {ext.target_ssl_port} ssl", f"listen 127.0.0.1:{ext.target_ssl_port} ssl")
    try:
        with running_nginx(local, prefix, port):
            yield Proxy(port, text)
    finally:
        for server, _ in servers.values():
            server.shutdown()


def ask(proxy: Proxy, host: str, *, method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request(method, "/", body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


ALICE = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}


def test_basic_auth_and_the_body_limit(proxy: Proxy) -> None:
    assert ask(proxy, "auth.local")[0] == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:x").decode()}
    assert ask(proxy, "auth.local", headers=wrong)[0] == 401
    assert ask(proxy, "auth.local", headers=ALICE)[::2] == (200, "auth\n")
    assert ask(proxy, "auth.local", method="POST", body=b"x" * 2048, headers=ALICE)[0] == 413
    assert ask(proxy, "auth.local", method="POST", body=b"x" * 512, headers=ALICE)[0] == 200


def test_a_denied_address_gets_403_and_the_rate_429(proxy: Proxy) -> None:
    assert ask(proxy, "deny.local")[0] == 403
    statuses = Counter(ask(proxy, "limits.local")[0] for _ in range(20))
    assert statuses[429] > 0 and statuses[200] >= 4 and set(statuses) == {200, 429}, statuses


def test_the_custom_503_page_keeps_its_status_and_text(proxy: Proxy) -> None:
    status, headers, body = ask(proxy, "down.local")
    assert (status, body) == (503, PAGE.replace("$", "&#36;")) and headers["content-type"] == "text/html"
    assert headers["x-request-id"] and headers["x-server-info"] == INFO  # Interlock's headers, as on nginx's own


def test_a_weighted_split_and_a_header_canary(proxy: Proxy) -> None:
    seen = Counter(ask(proxy, "split.local")[2].strip() for _ in range(200))
    assert seen == Counter({"stable": 180, "minor": 20}), seen  # smooth weighted round robin: exact
    assert {ask(proxy, "split.local", headers={"X-Canary": "beta"})[2].strip() for _ in range(10)} == {"beta"}
    others = {ask(proxy, "split.local", headers={"X-Canary": "other"})[2].strip() for _ in range(10)}
    assert others <= {"stable", "minor"}


def test_httpoptions_headers_reach_proxied_responses_and_nginxs_own_errors(proxy: Proxy) -> None:
    for host, headers, status in (("auth.local", ALICE, 200), ("auth.local", {}, 401), ("down.local", {}, 503),
                                  ("unknown.local", {}, 503), ("split.local", {}, 200), ("limits.local", {}, None)):
        answer = ask(proxy, host, headers=headers)
        assert status is None or answer[0] == status, (host, answer[0])
        assert answer[1].get(FRAME[0].lower()) == FRAME[1], (host, answer[0], answer[1])

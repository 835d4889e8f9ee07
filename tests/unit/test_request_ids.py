"""`RequestIDs`: on (the default), the render is Interlock's, byte for byte; off, nginx never evaluates
`$request_id` (its random bytes and `getpid` per request), sets no x-request-id, and a client's own
x-request-id still reaches the task and the JSON access log. A real nginx on loopback shows the last.
"""

from __future__ import annotations

import http.client
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from swarmgate.errors import ConfigError
from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.config import load_config, parse_config
from swarmgate.models.settings.extension import Extension
from swarmgate.models.settings.log_formats import DEFAULT_TRACE_LOG_FORMAT, TRACE_LOG_FORMAT_WITHOUT_REQUEST_IDS
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.state_file import load_state_file
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary, nginx_check
from tests.factories import node, service, task
from tests.support import answer, free_port
from tests.unit.test_policies_loopback import wait_listening
from tests.unit.test_render import GOLDEN, INFO, features_state

SEED_TOML = (GOLDEN / "seed-config.toml").read_text()
MARKER = "[Extensions.default.Config]"


def seed_with(*lines: str) -> Extension:
    """The seed's extension with these lines added to its nginx options."""
    assert MARKER in SEED_TOML
    text = SEED_TOML.replace(MARKER, MARKER + "".join(f"\n    {line}" for line in lines), 1)
    return parse_config(text, source="seed.toml").extensions["default"]


def render(ext: Extension, state: ObservedState | None = None) -> str:
    return render_nginx(ext, build_route_table(state or features_state(), ext), server_info=INFO).text


@pytest.mark.parametrize("more", [
    pytest.param((), id="seed"),
    pytest.param(('AccessLogFormat = "json"',), id="json-access-log"),
    pytest.param(("HideInfoHeaders = true",), id="no-info-headers"),
    pytest.param(("LuaBalancer = true", "SharedServerFrom = 1"), id="lua-balancer-shared-server"),
])
def test_request_ids_off_renders_no_request_id_anywhere_and_nginx_accepts_it(more: tuple[str, ...]) -> None:
    text = render(seed_with("RequestIDs = false", *more))
    assert "$request_id" not in text and "swarmgate_request_id" not in text and "x-request-id" not in text
    assert f"log_format trace '{TRACE_LOG_FORMAT_WITHOUT_REQUEST_IDS}';" in text
    nginx_check(text)


def test_request_ids_on_renders_the_default_byte_for_byte() -> None:
    state = load_state_file(GOLDEN / "api" / "seed-demo-state.json")
    default = load_config(GOLDEN / "seed-config.toml").extensions["default"]
    assert default.config.request_ids is True
    for observed in (state, features_state()):
        assert render(seed_with("RequestIDs = true"), observed) == render(default, observed)
    assert "proxy_set_header x-request-id $swarmgate_request_id;" in render(default)


def test_request_ids_off_keeps_a_trace_format_of_ones_own_and_refuses_one_naming_the_left_out_variable() -> None:
    assert seed_with("RequestIDs = false").config.trace_log_format == TRACE_LOG_FORMAT_WITHOUT_REQUEST_IDS
    assert seed_with().config.trace_log_format == DEFAULT_TRACE_LOG_FORMAT
    own = seed_with("RequestIDs = false", 'TraceLogFormat = "$remote_addr $request_id"')
    assert own.config.trace_log_format == "$remote_addr $request_id"  # asked for: nginx draws it when logged
    for key in ("MainLogFormat", "TraceLogFormat"):
        with pytest.raises(ConfigError) as caught:
            seed_with("RequestIDs = false", f'{key} = "$remote_addr ${{swarmgate_request_id}}"')
        assert str(caught.value) == (
            f"seed.toml: Extensions.default.Config: {key} names $swarmgate_request_id, which RequestIDs = false "
            "leaves out: use $http_x_request_id (the client's own x-request-id)")


class Echo(http.server.BaseHTTPRequestHandler):
    """A task that answers with the x-request-id it was sent (`-` when none)."""

    def do_GET(self) -> None:
        answer(self, (self.headers.get("x-request-id") or "-").encode())

    def log_message(self, *_: object) -> None:
        pass


def ask(port: int, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": "demo.local", **headers})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


@pytest.mark.skipif(nginx_binary() is None or shutil.which("openssl") is None, reason="needs nginx and openssl")
def test_with_request_ids_off_a_clients_own_id_reaches_the_task_and_the_log_and_nginx_makes_none(
    tmp_path: Path,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port, tls_port = free_port(), free_port()
    demo = service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    observed = ObservedState.from_api(services=[demo], tasks=[task(demo, "n0", ports={8080: server.server_port})],
                                      nodes=[node("n0", "127.0.0.1")])
    ext = Extension.model_validate({
        "PublishMode": "host", "HitlessServiceUpdate": False, "TargetPort": port, "PublishedPort": port,
        "TargetSSLPort": tls_port, "Config": {"RequestIDs": False, "AccessLogFormat": "json",
                                              "AccessLogPath": "/var/log/swarmgate/access.json"}})
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    local = localized(render(ext, observed), prefix, None).replace(f"listen {port}", f"listen 127.0.0.1:{port}")
    local = local.replace(f"listen {tls_port} ssl", f"listen 127.0.0.1:{tls_port} ssl")
    (prefix / "nginx.conf").write_text(local)
    nginx = subprocess.Popen([str(nginx_binary()), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                              "stderr", "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    answers: list[tuple[int, dict[str, str], str]] = []
    try:
        wait_listening(nginx, port)
        answers = [ask(port, {"x-request-id": "client-chose-this"}), ask(port, {})]
    finally:
        nginx.terminate()  # its workers flush the buffered access log as they exit
        nginx.communicate(timeout=10)
        server.shutdown()
    (own, own_headers, own_body), (none, none_headers, none_body) = answers
    assert (own, own_body, none, none_body) == (200, "client-chose-this", 200, "-")
    assert "x-request-id" not in own_headers and "x-request-id" not in none_headers
    assert own_headers["x-proxy-id"]  # Interlock's other info headers stay (HideInfoHeaders is false)
    logged: list[dict[str, Any]] = [json.loads(line) for log in (prefix / "logs").iterdir()
                                    for line in log.read_text().splitlines() if line.startswith("{")]
    assert [o["request_id"] for o in logged] == ["client-chose-this", ""]

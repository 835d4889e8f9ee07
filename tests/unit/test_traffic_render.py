"""What the renderer gives the traffic counters and the JSON access log (issue 18, items 3 and 4).

The key of a route is the config's (`traffic_key`); a real nginx on loopback runs the rendered config
and shows that each request's traffic line carries its route's key, whatever the client sends as its
Host, and that the JSON access log is one parseable object per request, with the request id, the
route, the upstream and the timings. Traffic stays on loopback.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.routing.traffic_key import DEFAULT_KEY, traffic_key
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary, nginx_check
from tests.factories import node, service, swarm_config, task
from tests.unit.test_https_loopback import free_port
from tests.unit.test_policies_loopback import lb, serve, wait_listening

INFO = "swarmgate/0.1.0 linux/amd64"


@pytest.mark.parametrize(("host", "path", "key"), [
    ("demo.local", None, "demo.local/"),
    ("demo.local", "/", "demo.local/"),
    ("demo.local", "/ping", "demo.local/ping"),
    ("*.example.test", "/api/v1", "*.example.test/api/v1"),
], ids=["host", "root", "path", "wildcard"])
def test_a_routes_key_is_its_host_and_path(host: str, path: str | None, key: str) -> None:
    assert traffic_key(host, path) == key
    assert DEFAULT_KEY == "-"


def state(backend: int) -> ObservedState:
    specs = [service("demo", lb("demo.local")), service("shop", lb("shop.local")),
             service("api", {**lb("shop.local"), "com.docker.lb.context_root": "/api"}),
             service("down", lb("down.local", error_page_503="sorry"))]
    return ObservedState.from_api(
        services=specs, tasks=[task(s, "n0", ports={8080: backend}) for s in specs if s["Spec"]["Name"] != "down"],
        nodes=[node("n0", "127.0.0.1")],
        configs=[swarm_config("sorry", b"resting\n", labels={"swarmgate.error-page": "true"})])


def rendered(config: dict[str, object], **ext: object) -> str:
    extension = Extension.model_validate({"PublishMode": "host", "Config": config, **ext})
    return render_nginx(extension, build_route_table(state(8080), extension), server_info=INFO).text


def test_trafficmetrics_false_or_no_agent_writes_no_traffic_log() -> None:
    on = rendered({})
    assert on.count("access_log /var/run/swarmgate-traffic/traffic.log swarmgate_traffic buffer=64k flush=1s;") == 2
    off, plain = rendered({"TrafficMetrics": False}), rendered({}, HitlessServiceUpdate=False)
    for text in (off, plain):  # no agent to count it (plain), or not asked: no log, no keys
        assert "swarmgate-traffic" not in text and "$swarmgate_route" not in text
        assert "location = /nginx_status {\n            stub_status;\n            access_log off;" in text
    json_only = rendered({"TrafficMetrics": False, "AccessLogFormat": "json"})
    assert "swarmgate-traffic" not in json_only and 'set $swarmgate_route "shop.local/api";' in json_only
    for text in (on, off, plain, json_only):
        nginx_check(text)


@pytest.mark.skipif(nginx_binary() is None or shutil.which("openssl") is None, reason="needs nginx and openssl")
def test_each_request_is_logged_under_its_routes_key_and_as_json(tmp_path: Path) -> None:
    server, backend = serve("task")
    port, tls_port = free_port(), free_port()
    extension = Extension.model_validate({
        "PublishMode": "host", "TargetPort": port, "PublishedPort": port, "TargetSSLPort": tls_port,
        "Config": {"AccessLogFormat": "json", "AccessLogPath": "/var/log/swarmgate/access.json"}})
    text = render_nginx(extension, build_route_table(state(backend), extension), server_info=INFO).text
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    local = localized(text, prefix, (cert, key)).replace(f"listen {port}", f"listen 127.0.0.1:{port}").replace(
        f"listen {tls_port} ssl", f"listen 127.0.0.1:{tls_port} ssl")
    (prefix / "nginx.conf").write_text(local)
    nginx = subprocess.Popen([str(nginx_binary()), "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr",
                              "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    asked = [("demo.local", "/", 200, "demo.local/"), ("DEMO.local", "/x", 200, "demo.local/"),
             ("shop.local", "/", 200, "shop.local/"), ("shop.local", "/api/v1", 200, "shop.local/api"),
             ("shop.local", "/api", 200, "shop.local/api"), ("down.local", "/", 503, "down.local/"),
             ("evil-4711.example", "/", 503, "-"), ("127.0.0.1", "/nginx_status", 200, "-")]
    try:
        wait_listening(nginx, port)
        for host, path, code, _ in asked:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"Host": host, "User-Agent": 'quote " and \\ back'})
            assert conn.getresponse().status == code, (host, path)
            conn.close()
    finally:
        nginx.terminate()  # its workers flush their buffered lines as they exit
        _, errors = nginx.communicate(timeout=10)
        server.shutdown()
    assert b"uninitialized" not in errors  # every request had its key
    traffic = next(p for p in (prefix / "logs").iterdir() if "|" in p.read_text())
    access = next(p for p in (prefix / "logs").iterdir() if p.read_text().startswith("{"))
    keys = [line.split(" ")[2].split("|")[0] for line in traffic.read_text().splitlines()]
    assert keys == [k for *_, k in asked]
    # /nginx_status is counted, but not in the access log (Interlock's `access_log off`, its own).
    objects = [json.loads(line) for line in access.read_text().splitlines()]
    assert [o["route"] for o in objects] == [k for *_, k in asked[:-1]]
    assert [o["status"] for o in objects] == [c for _, _, c, _ in asked[:-1]]
    first = objects[0]
    assert first["upstream_addr"] == f"127.0.0.1:{backend}" and first["user_agent"] == 'quote " and \\ back'
    assert len(first["request_id"]) == 32 and isinstance(first["request_time"], float)
    assert objects[-1]["upstream_addr"] == ""  # nginx's own answer: no upstream

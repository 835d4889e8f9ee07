"""Rendering: whole configs against golden files (each checked by nginx -t), and what they contain.

Regenerate the golden files with `SWARMGATE_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py`, then
read the diff: it is the change in what every proxy will run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crossplane
import pytest

from swarmgate.errors import ConfigError, RenderError
from swarmgate.models.routing.route_types import HostRoute, PathRoute, RouteTable, Upstream
from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.config import load_config, parse_config
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.state_file import load_state_file
from swarmgate.renderers.nginx import (
    UnsafeValueError,
    control_server,
    custom_template,
    render_bootstrap,
    render_nginx,
)
from swarmgate.renderers.validate import NginxRejectedConfig, nginx_check
from tests.factories import node, service, swarm_config, swarm_secret, task
from tests.support import check_golden

GOLDEN = Path(__file__).parent.parent / "golden"
INFO = "swarmgate/0.1.0 linux/amd64"
SEED = load_config(GOLDEN / "seed-config.toml").extensions["default"]
EDGE = load_config(GOLDEN / "options.toml").extensions["edge"]
# The balancer behind the shared server (a server per host under it: tests/unit/test_agent_lua.py).
LUA = SEED.model_copy(update={"config": SEED.config.model_copy(update={"lua_balancer": True, "shared_server_from": 1})})


def lb(hosts: str, **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


def features_state(cluster: str | None = None) -> ObservedState:
    extra = {"service_cluster": cluster} if cluster else {}
    demo = service("demo", lb("demo.local", **extra), created_at="2026-01-01T00:00:00Z")
    canary = service("demo-canary", lb("demo.local", **extra), created_at="2026-02-01T00:00:00Z")
    # Tasks that close idle connections after 2 s (gunicorn) and one that keeps none.
    app = service("app", {**lb("demo.local", context_root="/app", context_root_rewrite="true",
                               websocket_endpoints="/app/live", **extra), "swarmgate.backend_idle_timeout": "2s"})
    shop = service("shop", lb("shop.local,www.shop.local", ssl_cert="shop.crt", ssl_key="shop.key",
                              sticky_session_cookie="shop_session", **extra))
    legacy = service("legacy", {**lb("api.local,old.local", ip_hash="true",
                                     redirects="http://old.local,https://api.local", **extra),
                                "swarmgate.backend_idle_timeout": "0"})
    empty = service("empty", lb("empty.local", **extra))
    fallback = service("fallback", {"com.docker.lb.default_backend": "true", "com.docker.lb.port": "8080",
                                    **({"com.docker.lb.service_cluster": cluster} if cluster else {})})
    broken = service("broken", lb("broken.local", port="80; evil", **extra))
    # HTTPS labels: to HTTPS only, TLS to verified tasks, HSTS; and TLS to unverified tasks on a shared host.
    secure = service("secure", {**lb("secure.local", ssl_cert="shop.crt", ssl_key="shop.key", ssl_only="true",
                                     ssl_backend="true", ssl_backend_tls_verify="required", **extra),
                                "swarmgate.ssl_backend_ca": "backend-ca.pem", "swarmgate.hsts": "365d",
                                "swarmgate.hsts_subdomains": "true", "swarmgate.hsts_preload": "true"})
    tls_tasks = service("tls-tasks", lb("tls-tasks.local", ssl_backend="true", **extra))
    return ObservedState.from_api(
        services=[demo, canary, app, shop, legacy, empty, fallback, broken, secure, tls_tasks],
        tasks=[
            task(demo, "wrk-0", slot=1, ports={8080: 30000}), task(demo, "wrk-1", slot=2, ports={8080: 30001}),
            task(canary, "wrk-1", ports={8080: 30002}), task(app, "wrk-0", ports={8080: 30003}),
            task(shop, "wrk-0", ports={8080: 30004}), task(shop, "wrk-1", slot=2, ports={8080: 30005}),
            task(legacy, "wrk-0", ports={8080: 30006}), task(fallback, "wrk-1", ports={8080: 30007}),
            task(empty, "wrk-0", state="starting", ports={8080: 30008}),
            task(secure, "wrk-1", ports={8080: 30010}), task(tls_tasks, "wrk-0", ports={8080: 30011}),
        ],
        nodes=[node("wrk-0", "10.1.0.10"), node("wrk-1", "10.1.0.11")],
        secrets=[swarm_secret("shop.crt"), swarm_secret("shop.key"), swarm_secret("backend-ca.pem")],
    )


def golden_cases() -> list[Any]:
    seed_state = load_state_file(GOLDEN / "api" / "seed-demo-state.json")
    return [
        # As a live pass renders it: the control server admits the state's nodes.
        pytest.param("seed-demo.conf", lambda: render_nginx(
            SEED, build_route_table(seed_state, SEED), server_info=INFO,
            control_peers=[n.addr for n in seed_state.nodes if n.addr]), id="seed-demo"),
        pytest.param("bootstrap.conf", lambda: render_bootstrap(SEED, server_info=INFO), id="bootstrap"),
        pytest.param("features.conf", lambda: render_nginx(SEED, build_route_table(features_state(), SEED),
                                                          server_info=INFO), id="every-label-feature"),
        pytest.param("options.conf", lambda: render_nginx(EDGE, build_route_table(features_state("edge"), EDGE),
                                                         server_info=INFO), id="every-nginx-option"),
        # LuaBalancer: round-robin pools through one Lua balancer (needs Debian's libnginx-mod-http-lua).
        pytest.param("features-lua.conf", lambda: render_nginx(LUA, build_route_table(features_state(), LUA),
                                                              server_info=INFO), id="lua-balancer"),
    ]


@pytest.mark.parametrize(("name", "render"), golden_cases())
def test_rendered_config_matches_golden_file_and_passes_nginx_t(name: str, render: Any) -> None:
    text = render().text
    check_golden(GOLDEN / name, text)
    nginx_check(text)


def parse(text: str, tmp_path: Path) -> list[dict[str, Any]]:
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    payload = crossplane.parse(str(conf), single=True, check_ctx=True, check_args=False, comments=False)
    assert payload["status"] == "ok", payload["errors"]
    return list(payload["config"][0]["parsed"])


def find(block: list[dict[str, Any]], directive: str) -> list[dict[str, Any]]:
    found = []
    for item in block:
        if item["directive"] == directive:
            found.append(item)
        found.extend(find(item.get("block", []), directive))
    return found


def without_control(parsed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The http block's servers other than swarmgate's control server."""
    return [s for s in find(parsed, "server") if "block" in s
            and ["swarmgate-control.invalid"] not in [d["args"] for d in s["block"] if d["directive"] == "server_name"]]


def test_seed_demo_proxies_demo_local_to_each_running_tasks_node_address_and_high_port(tmp_path: Path) -> None:
    seed_state = load_state_file(GOLDEN / "api" / "seed-demo-state.json")
    parsed = parse(render_nginx(SEED, build_route_table(seed_state, SEED), server_info=INFO).text, tmp_path)
    servers = [s for s in find(parsed, "server") if "block" in s and any(d["args"] == ["demo.local"] for d in s["block"]
                                                      if d["directive"] == "server_name")]
    (demo_server,) = servers
    (proxy_pass,) = find(demo_server["block"], "proxy_pass")
    pool = proxy_pass["args"][0].removeprefix("http://")
    if pool == "$swarmgate_pool":  # a host that needs nothing of its own: the shared server's map names its pool
        (pool_map,) = [m for m in find(parsed, "map") if m["args"] == ["$host", "$swarmgate_pool"]]
        (pool,) = [d["args"][0] for d in pool_map["block"] if d["directive"] == "demo.local"]
    (upstream,) = [u for u in find(parsed, "upstream") if u["args"] == [pool]]
    addresses = sorted(d["args"][0] for d in upstream["block"] if d["directive"] == "server")
    # The lab's two tasks: on mgr-0 (198.18.0.11) and lb-01 (198.18.0.13), both on host port 32768.
    assert addresses == ["198.18.0.11:32768", "198.18.0.13:32768"]
    assert [d["args"] for d in find(parsed, "listen")] == [
        ["80", "default_server"], ["443", "ssl", "http2", "default_server"],
        ["443", "ssl"], ["80"]]  # the control server (http2 is per address: nginx gives it too), demo.local


def test_interlock_response_and_request_headers_are_set(tmp_path: Path) -> None:
    parsed = parse(render_nginx(SEED, build_route_table(features_state(), SEED), server_info=INFO).text, tmp_path)
    location = next(loc for loc in find(parsed, "location") if find(loc["block"], "proxy_pass"))
    headers = {tuple(d["args"]) for d in location["block"] if d["directive"] in ("proxy_set_header", "add_header")}
    assert headers >= {
        ("Host", "$http_host"), ("X-Real-IP", "$remote_addr"), ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("x-request-id", "$swarmgate_request_id"), ("x-request-id", "$swarmgate_request_id", "always"),
        ("x-proxy-id", "$hostname", "always"), ("x-server-info", INFO, "always"),
        ("x-upstream-addr", "$upstream_addr", "always"),
        ("x-upstream-response-time", "$upstream_header_time", "always"),
    }
    # Interlock's retries, invalid_header included.
    assert [d["args"] for d in find(parsed, "proxy_next_upstream")] == [["error", "timeout", "invalid_header",
                                                                         "http_502", "http_503", "http_504"]]


def test_hide_info_headers_removes_every_response_header(tmp_path: Path) -> None:
    parsed = parse(render_nginx(EDGE, build_route_table(features_state("edge"), EDGE), server_info=INFO).text,
                   tmp_path)
    # HSTS is a host's policy (swarmgate.hsts), not information about the proxy: it stays.
    assert {d["args"][0] for d in find(parsed, "add_header")} == {"Strict-Transport-Security"}


def test_unknown_hosts_and_hosts_without_running_tasks_get_503(tmp_path: Path) -> None:
    table = RouteTable(cluster="", hosts=(HostRoute("empty.local", (PathRoute("/", "p", ("empty",), ()),)),))
    parsed = parse(render_nginx(SEED, table, server_info=INFO).text, tmp_path)
    assert [d["args"] for d in find(without_control(parsed), "return")] == [["503"], ["503"]]
    assert find(parsed, "upstream") == []


def test_tcp_options_open_a_stream_block(tmp_path: Path) -> None:
    ext = Extension.model_validate({"Config": {"TCPOptions": ["tcp_nodelay on"]}})
    parsed = parse(render_nginx(ext, RouteTable(cluster=""), server_info=INFO).text, tmp_path)
    (stream,) = find(parsed, "stream")
    assert stream["block"] == [{"directive": "tcp_nodelay", "line": stream["block"][0]["line"], "args": ["on"]}]


def test_rendering_twice_gives_byte_identical_text_and_digest() -> None:
    first = render_nginx(SEED, build_route_table(features_state(), SEED), server_info=INFO)
    second = render_nginx(SEED, build_route_table(features_state(), SEED), server_info=INFO)
    assert first == second
    assert len(first.digest) == 64


@pytest.mark.parametrize(
    "table",
    [
        pytest.param(RouteTable(cluster="", hosts=(HostRoute("a.local;evil", ()),)), id="host"),
        pytest.param(RouteTable(cluster="", hosts=(HostRoute("a.local", (PathRoute("/a b", "p", ("s",), ()),)),)),
                     id="path"),
        pytest.param(RouteTable(cluster="", hosts=(HostRoute("a.local", (PathRoute(
            "/", "p", ("s",), (Upstream("1.2.3.4;", 80, "t", "n", "s"),)),)),)), id="upstream-address"),
        pytest.param(RouteTable(cluster="", hosts=(HostRoute("a.local", (PathRoute(
            "/", "p", ("s",), (Upstream("1.2.3.4", 80, "t", "n", "s"),), sticky_cookie="a$b"),)),)), id="cookie"),
    ],
)
def test_a_hand_built_table_with_nginx_syntax_in_it_is_refused(table: RouteTable) -> None:
    with pytest.raises(UnsafeValueError):
        render_nginx(SEED, table, server_info=INFO)


def test_server_info_with_quotes_is_refused() -> None:
    with pytest.raises(RenderError, match="server_info"):
        render_nginx(SEED, RouteTable(cluster=""), server_info='x" always; evil "')


def test_template_option_names_a_swarm_config_rendered_with_the_same_context() -> None:
    ext = SEED.model_copy(update={"template": "my-template"})
    tpl = b"events {}\nhttp {\n{% for h in table.hosts %}  server { listen 80; server_name {{ h.host | word }}; }\n" \
          b"{% endfor %}{{ swarmgate_control }}}\n"
    observed = ObservedState.from_api(services=[service("demo", lb("demo.local"))], tasks=[], nodes=[],
                                      configs=[swarm_config("my-template", tpl)])
    text = render_nginx(ext, build_route_table(observed, ext), server_info=INFO,
                        template_text=custom_template(ext, observed)).text
    assert text == ("events {}\nhttp {\n  server { listen 80; server_name demo.local; }\n"
                    + control_server(ext) + "}\n")
    nginx_check(text)


@pytest.mark.parametrize(("hitless", "refused"), [(True, True), (False, False)], ids=["hitless", "plain"])
def test_a_custom_template_without_the_control_server_is_refused_only_in_hitless_mode(hitless: bool,
                                                                                       refused: bool) -> None:
    ext = SEED.model_copy(update={"hitless_service_update": hitless})
    template = "events {}\nhttp {\n  server { listen 80; }\n}\n"
    if refused:
        with pytest.raises(ConfigError, match=r"Extensions\.default\.Template: the output lacks "
                                              r"\{\{ swarmgate_control \}\}"):
            render_nginx(ext, RouteTable(cluster=""), server_info=INFO, template_text=template)
    else:
        assert render_nginx(ext, RouteTable(cluster=""), server_info=INFO, template_text=template).text == template


def test_the_control_server_is_on_the_tls_port_under_its_reserved_name_and_the_agent_owns_the_rest(
        tmp_path: Path) -> None:
    # TLS, client certificates, locations and body limit are in the agent's own file: nothing a
    # pushed config says can open the control server up (the agent checks this block is there).
    parsed = parse(render_bootstrap(SEED, server_info=INFO).text, tmp_path)
    (control,) = [s for s in find(parsed, "server") if s not in without_control(parsed)]
    assert [(d["directive"], d["args"]) for d in control["block"]] == [
        ("listen", ["443", "ssl"]), ("server_name", ["swarmgate-control.invalid"]),
        ("include", ["/var/lib/swarmgate/control/*.conf"])]
    assert "swarmgate_authorized" not in render_bootstrap(SEED, server_info=INFO).text


def test_plain_delivery_renders_no_control_server() -> None:
    plain = SEED.model_copy(update={"hitless_service_update": False})
    assert "swarmgate-control" not in render_nginx(plain, RouteTable(cluster=""), server_info=INFO).text


def test_template_option_naming_no_swarm_config_is_a_config_error() -> None:
    ext = SEED.model_copy(update={"template": "missing"})
    with pytest.raises(ConfigError, match=r"Extensions\.default\.Template: no Swarm config named 'missing'"):
        custom_template(ext, ObservedState())


def test_custom_templates_run_in_the_sandbox() -> None:
    with pytest.raises(ConfigError, match="SecurityError"):
        render_nginx(SEED, RouteTable(cluster=""), server_info=INFO,
                     template_text="{{ ext.__class__.__mro__[1].__subclasses__() }}")


def test_nginx_check_reports_nginxs_own_message() -> None:
    with pytest.raises(NginxRejectedConfig, match='unknown directive "bogus"'):
        nginx_check("events {}\nhttp { bogus on; }\n")


@pytest.mark.parametrize(
    ("length", "count"),
    [pytest.param(253, 1, id="one-253-char-host"), pytest.param(253, 300, id="300-long-hosts"),
     pytest.param(30, 2000, id="2000-short-hosts")],
)
def test_long_or_many_host_names_still_give_a_config_nginx_accepts(length: int, count: int) -> None:
    # With Interlock's bucket size of 128 a single 120-character host name, valid by RFC 1123, made
    # nginx reject the whole config: one service could take every route down.
    def host(i: int) -> str:
        name = f"h{i}-" + "a" * 300
        return ".".join(name[k:k + 63] for k in range(0, 300, 63))[:length - 6].rstrip(".-") + ".local"

    services = [service(f"s{i}", lb(host(i))) for i in range(count)]
    table = build_route_table(ObservedState.from_api(services=services, tasks=[], nodes=[]), SEED)
    assert len(table.hosts) == count
    nginx_check(render_nginx(SEED, table, server_info=INFO).text)


def test_upstream_keepalive_is_on_by_default_below_the_tasks_idle_timeout_and_off_on_request(
        tmp_path: Path) -> None:
    text = render_nginx(SEED, build_route_table(features_state(), SEED), server_info=INFO).text
    nginx_check(text)  # keepalive_timeout inside upstream needs nginx 1.15.3; this is the proxy's nginx
    parsed = parse(text, tmp_path)
    kept = {}
    for upstream in find(parsed, "upstream"):
        directives = {d["directive"]: d["args"] for d in upstream["block"]}
        kept[upstream["args"][0].split("_", 1)[1]] = (directives.get("keepalive"), directives.get("keepalive_timeout"))
    # Every pool keeps 16 idle connections for 1.5 s (below gunicorn's 2 s), but the app's tasks
    # close theirs after 2 s (half that, 1 s) and legacy's keep none (`swarmgate.backend_idle_timeout`).
    assert kept == {
        "default": (["16"], ["1500ms"]), "api_local": (None, None),
        "demo_local": (["16"], ["1500ms"]), "demo_local_app": (["16"], ["1s"]),
        "demo_local_app_live": (["16"], ["1s"]), "shop_local": (["16"], ["1500ms"]),
        "www_shop_local": (["16"], ["1500ms"]), "secure_local": (["16"], ["1500ms"]),
        "tls_tasks_local": (["16"], ["1500ms"])}
    proxied = [loc for loc in find(parsed, "location") if find(loc["block"], "proxy_pass")]
    for loc in proxied:
        connection = [d["args"][1] for d in loc["block"]
                      if d["directive"] == "proxy_set_header" and d["args"][0] == "Connection"]
        # A websocket location passes the client's upgrade on; every other one asks to keep the
        # connection ("" drops nginx's default `Connection: close`).
        websocket = loc["args"][-1].rstrip("/") == "/app/live"
        assert connection == (["$swarmgate_connection_upgrade"] if websocket else [""]), loc["args"]
    off = SEED.model_copy(update={"config": SEED.config.model_copy(update={"upstream_keepalive": 0})})
    plain = render_nginx(off, build_route_table(features_state(), off), server_info=INFO).text
    assert "keepalive " not in plain.replace("keepalive_timeout", "")  # `UpstreamKeepalive = 0`: Interlock's way


@pytest.mark.parametrize(("options", "expected"), [
    ({}, "access_log /dev/stdout main buffer=4k flush=1s;"),
    ({"AccessLogBuffer": "1k", "AccessLogFlush": "250ms"}, "access_log /dev/stdout main buffer=1k flush=250ms;"),
    ({"AccessLogBuffer": "0"}, "access_log /dev/stdout main;"),
], ids=["default-pipe-buf-chunks", "smaller-and-sooner", "unbuffered-as-interlock"])
def test_the_access_log_is_written_in_chunks_unless_access_log_buffer_is_0(options: dict[str, str],
                                                                           expected: str) -> None:
    toml = "[Extensions.default.Config]\n" + "".join(f'{k} = "{v}"\n' for k, v in options.items())
    ext = parse_config(toml, source="c.toml").extensions["default"]
    text = render_nginx(ext, build_route_table(features_state(), ext), server_info=INFO).text
    nginx_check(text)
    assert [line.strip() for line in text.splitlines() if line.strip().startswith("access_log /")] == [expected]


def test_access_log_buffer_above_pipe_buf_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"c.toml: .*AccessLogBuffer.*from 0 to 4k, got '8k'"):
        parse_config('[Extensions.default.Config]\nAccessLogBuffer = "8k"\n', source="c.toml")


def test_the_control_server_names_its_peers_for_the_agent_and_nginx_accepts_it() -> None:
    text = render_nginx(SEED, RouteTable(cluster=""), server_info=INFO,
                        control_peers=("198.18.0.12", "198.18.0.11", "10.1.0.0/16")).text
    block = text[text.index("server_name swarmgate-control.invalid;"):]
    block = block[:block.index("}")]
    assert [line.strip() for line in block.splitlines()[2:]] == [
        "# Who may use this server, key or not (the agent turns it into allow/deny; 403 for others):",
        "# swarmgate channel peers: 10.1.0.0/16 198.18.0.11/32 198.18.0.12/32", ""]
    nginx_check(text)

"""Per-route policies (`swarmgate.*` policy labels): one golden config with every policy, checked by
`nginx -t`, and what each label turns into (pure, with the real nginx for the golden).

The golden config's extension also adds headers through `HTTPOptions`: every location repeats them
(nginx drops inherited `add_header`s in a block that sets its own), so they reach every response.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from swarmgate.models.routing.labels import ServiceRouting, SetAside, parse_service_labels
from swarmgate.models.routing.routes import RouteTable, build_route_table
from swarmgate.models.routing.tls_secrets import SECRETS_DIR
from swarmgate.models.settings.config import load_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.cli.offline import format_route_table
from swarmgate.operator.planning.courier import COURIER_DIR, COURIER_SCRIPT, build_courier_spec
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import nginx_check
from tests.factories import node, service, swarm_config, swarm_secret, task
from tests.support import check_golden

GOLDEN = Path(__file__).parent.parent / "golden"
INFO = "swarmgate/0.1.0 linux/amd64"
EXT = load_config(GOLDEN / "policies.toml").extensions["default"]
OLD, MID, NEW = "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"
PAGE = b'<html><body><h1>Sorry</h1><p>"back soon", costs $0</p>\n</body></html>\n'


def lb(hosts: str, **own: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"swarmgate.{k}": v for k, v in own.items()}}


def policies_state() -> ObservedState:
    guarded = service("guarded", {**lb("guarded.local", auth_secret="users.htpasswd", allow="10.0.0.0/8,198.18.0.0/24",
                                       deny="10.0.0.66", rate_limit="5r/s", rate_burst="10", conn_limit="4",
                                       max_body_size="1k", connect_timeout="2s", read_timeout="90s",
                                       send_timeout="500ms", error_page_503="sorry.html", error_page_502="sorry.html"),
                                  "swarmgate.response_header.X-Robots-Tag": "noindex, nofollow",
                                  "swarmgate.response_header.Content-Security-Policy": "default-src 'self'; img-src *"},
                      created_at=OLD)
    stable = service("stable", lb("split.local", weight="90", max_fails="3", fail_timeout="30s"), created_at=OLD)
    minor = service("minor", lb("split.local", weight="10"), created_at=MID)
    main = service("main", lb("canary.local", rate_limit="600r/m"), created_at=OLD)
    beta = service("beta", lb("canary.local", canary="header:X-Canary=beta"), created_at=MID)
    moved = service("moved", {**lb("moved.local", redirect_code="308"),
                              "com.docker.lb.redirects": "http://moved.local,https://new.local"}, created_at=OLD)
    down = service("down", lb("down.local", error_page_503="sorry.html"), created_at=OLD)
    # The default backend answers unknown names in the default servers: its pages are named there.
    fallback = service("fallback", {"com.docker.lb.default_backend": "true", "com.docker.lb.port": "8080",
                                    "swarmgate.error_page_502": "sorry.html"}, created_at=OLD)
    services = [guarded, stable, minor, main, beta, moved, down, fallback]
    return ObservedState.from_api(
        services=services,
        tasks=[task(guarded, "wrk-0", ports={8080: 30000}),
               task(stable, "wrk-0", slot=1, ports={8080: 30001}), task(stable, "wrk-1", slot=2, ports={8080: 30002}),
               task(stable, "wrk-1", slot=3, ports={8080: 30003}), task(minor, "wrk-0", ports={8080: 30004}),
               task(main, "wrk-0", ports={8080: 30005}), task(beta, "wrk-1", ports={8080: 30006}),
               task(moved, "wrk-0", ports={8080: 30007}), task(fallback, "wrk-1", ports={8080: 30008})],
        nodes=[node("wrk-0", "10.1.0.10"), node("wrk-1", "10.1.0.11")],
        secrets=[swarm_secret("users.htpasswd")],
        configs=[swarm_config("sorry.html", PAGE, labels={"swarmgate.error-page": "true"})],
    )


def policies_table() -> RouteTable:
    return build_route_table(policies_state(), EXT)


def test_every_policy_renders_as_the_golden_file_and_passes_nginx_t() -> None:
    table = policies_table()
    assert table.set_aside == ()
    text = render_nginx(EXT, table, server_info=INFO).text
    check_golden(GOLDEN / "policies.conf", text)
    nginx_check(text)


def test_weights_split_a_pool_by_service_whatever_its_task_count() -> None:
    split = next(h for h in policies_table().hosts if h.host == "split.local").paths[0]
    weights: dict[str, int] = {}
    for up, params in zip(split.upstreams, split.params, strict=True):
        assert params.weight is not None
        weights[up.service] = weights.get(up.service, 0) + params.weight
    assert weights == {"stable": 90_000, "minor": 10_000}
    assert {(p.max_fails, p.fail_timeout) for up, p in zip(split.upstreams, split.params, strict=True)
            if up.service == "stable"} == {(3, 30)}


def test_a_header_canary_gets_its_own_pool_and_only_matching_requests() -> None:
    route = next(h for h in policies_table().hosts if h.host == "canary.local").paths[0]
    assert route.services == ("main",) and route.canary is not None and route.canary.services == ("beta",)
    assert route.canary_match is not None and route.canary_match.variable == "http_x_canary"
    assert route.canary.pool != route.pool


def test_httpoptions_headers_are_repeated_in_every_location_that_sets_its_own() -> None:
    text = render_nginx(EXT, policies_table(), server_info=INFO).text
    assert text.count("add_header x-request-id") == text.count("add_header X-Frame-Options DENY always;") - 1


def routing(more: dict[str, str] | None = None, **own: str) -> ServiceRouting | SetAside | None:
    return parse_service_labels("s", {**lb("s.local", **own), **(more or {})})


@pytest.mark.parametrize(("own", "kind"), [
    pytest.param({"rate_limit": "10r/h"}, "rate_limit", id="rate-per-hour"),
    pytest.param({"rate_limit": "0r/s"}, "rate_limit", id="rate-zero"),
    pytest.param({"rate_limit": "100001r/s"}, "rate_limit", id="rate-too-high"),
    pytest.param({"rate_limit": "123r/s"}, "rate_limit", id="rate-with-three-significant-digits"),
    pytest.param({"rate_burst": "5"}, "rate_burst", id="burst-without-rate"),
    pytest.param({"conn_limit": "0"}, "conn_limit", id="no-connections"),
    pytest.param({"max_body_size": "65g"}, "max_body_size", id="body-too-large"),
    pytest.param({"max_body_size": "1m; evil"}, "max_body_size", id="body-with-a-directive"),
    pytest.param({"allow": "10.0.0.0/33"}, "allow", id="cidr-bad-prefix"),
    pytest.param({"deny": "all"}, "deny", id="deny-all-word"),
    pytest.param({"weight": "101"}, "weight", id="weight-above-the-default"),
    pytest.param({"weight": "0"}, "weight", id="weight-zero"),
    pytest.param({"weight": "50", "canary": "header:X-Canary=on"}, "weight", id="weight-on-a-canary"),
    pytest.param({"canary": "header:X-Requested-With=XMLHttpRequest"}, "canary", id="canary-on-an-ordinary-header"),
    pytest.param({"canary": "header:Host=s.local"}, "canary", id="canary-on-host"),
    pytest.param({"canary": "cookie:session=1"}, "canary", id="canary-on-an-ordinary-cookie"),
    pytest.param({"canary": "header:X-Canary="}, "canary", id="canary-empty-value"),
    pytest.param({"canary": 'header:X-Canary=a"b'}, "canary", id="canary-with-a-quote"),
    pytest.param({"redirect_code": "303", "more": {"com.docker.lb.redirects": "http://s.local,https://t.local"}},
                 "redirect_code", id="redirect-303"),
    pytest.param({"redirect_code": "301"}, "redirect_code", id="redirect-code-without-redirects"),
    pytest.param({"connect_timeout": "76s"}, "connect_timeout", id="connect-beyond-nginx-cap"),
    pytest.param({"read_timeout": "2h"}, "read_timeout", id="read-too-long"),
    pytest.param({"fail_timeout": "500ms"}, "fail_timeout", id="fail-timeout-below-a-second"),
    pytest.param({"max_fails": "-1"}, "max_fails", id="max-fails-negative"),
    pytest.param({"auth_secret": "../etc/passwd"}, "auth_secret", id="auth-secret-a-path"),
    pytest.param({"error_page_503": "a b"}, "error_page_503", id="page-config-name-with-a-space"),
    pytest.param({"response_header.Strict-Transport-Security": "max-age=0"}, "response_header",
                 id="header-overrides-hsts"),
    pytest.param({"response_header.X-Request-Id": "fixed"}, "response_header", id="header-overrides-request-id"),
    pytest.param({"response_header.Set-Cookie": "admin=1"}, "response_header", id="header-sets-a-cookie"),
    pytest.param({"response_header.X-A": "$request_uri"}, "response_header", id="header-with-a-variable"),
    pytest.param({"response_header.X-A": 'a"; return 200 "x'}, "response_header", id="header-with-a-quote"),
    pytest.param({"response_header.X-A": "a\nb"}, "response_header", id="header-with-a-newline"),
    pytest.param({"response_header.X A": "b"}, "response_header", id="header-name-with-a-space"),
])
def test_an_invalid_policy_label_sets_the_service_aside_naming_the_label(own: dict[str, Any], kind: str) -> None:
    parsed = routing(**own)
    assert isinstance(parsed, SetAside) and parsed.kind == kind, parsed


def test_policy_values_are_typed() -> None:
    parsed = routing(rate_limit="600r/m", rate_burst="20", max_body_size="10m", allow="10.1.2.3/8, ::1",
                     read_timeout="2m", fail_timeout="1m", redirect_code="307", weight="10",
                     more={"com.docker.lb.redirects": "http://s.local,https://t.local"})
    assert isinstance(parsed, ServiceRouting)
    route, member = parsed.policies.route, parsed.policies.member
    assert route.rate is not None
    assert (route.rate.per_minute, route.rate.burst, route.rate.nginx_rate) == (600, 20, "10r/s")
    assert (route.max_body, route.allow, route.read_timeout_ms) == (10 * 1024 ** 2, ("10.0.0.0/8", "::1/128"), 120_000)
    assert (member.weight, member.fail_timeout, parsed.policies.redirect_code) == (10, 60, 307)


def test_an_error_page_config_must_say_it_may_be_shown_to_anyone() -> None:
    bare = swarm_config("app-settings", b"password=hunter2")
    observed = ObservedState.from_api(services=[service("s", lb("s.local", error_page_503="app-settings"))],
                                      tasks=[], nodes=[], configs=[bare])
    assert [s.kind for s in build_route_table(observed, EXT).set_aside] == ["error_page_503"]


def test_a_response_header_httpoptions_adds_cannot_be_added_again_by_a_label() -> None:
    observed = ObservedState.from_api(services=[service("s", {**lb("s.local"),
                                                              "swarmgate.response_header.X-Frame-Options": "ALLOW"})],
                                      tasks=[], nodes=[])
    aside = build_route_table(observed, EXT).set_aside
    assert [s.kind for s in aside] == ["response_header"] and "HTTPOptions" in aside[0].reason


def test_rates_have_two_significant_digits_so_all_services_make_fewer_than_a_thousand_zones() -> None:
    spellings = {f"{a * 10 ** e}r/{unit}" for a in range(1, 100) for e in range(6) for unit in "sm"}
    accepted = set()
    for spelling in spellings:
        parsed = routing(rate_limit=spelling)
        if isinstance(parsed, ServiceRouting) and parsed.policies.route.rate is not None:
            accepted.add(parsed.policies.route.rate.per_minute)
    assert 700 < len(accepted) < 1000


def test_an_htpasswd_secret_is_readable_by_nginx_unless_it_is_also_a_certificate() -> None:
    observed = ObservedState.from_api(
        services=[service("auth", lb("auth.local", auth_secret="users")),
                  service("thief", lb("thief.local", auth_secret="site.key")),
                  service("site", {**lb("site.local"), "com.docker.lb.ssl_cert": "site.crt",
                                   "com.docker.lb.ssl_key": "site.key"})],
        tasks=[], nodes=[], secrets=[swarm_secret(n) for n in ("users", "site.crt", "site.key")])
    table = build_route_table(observed, EXT)
    assert table.readable_secrets == ("site.key", "users") and table.readable_only_secrets == ("users",)
    by_name = {s.name: s for s in observed.secrets}
    spec = build_courier_spec(EXT, observed.secrets, constraints=[], readable_ids=[by_name["users"].id])
    modes = {ref["SecretName"]: ref["File"]["Mode"] for ref in spec["TaskTemplate"]["ContainerSpec"]["Secrets"]}
    assert modes == {"users": 0o444, "site.crt": 0o400, "site.key": 0o400}


def test_the_courier_keeps_a_readable_mount_readable_and_every_other_file_root_only(tmp_path: Path) -> None:
    secrets, certs = tmp_path / "secrets", tmp_path / "certs"
    secrets.mkdir()
    certs.mkdir()
    (secrets / "htpasswdid").write_text("alice:x\n")
    (secrets / "htpasswdid").chmod(0o444)
    (secrets / "keyid").write_text("KEY\n")
    (secrets / "keyid").chmod(0o400)
    script = COURIER_SCRIPT.replace(SECRETS_DIR, f"{secrets}/").replace(f"dst={COURIER_DIR}", f"dst={certs}")
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "2 certificate files in place" in proc.stdout.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in certs.iterdir()}
    assert modes == {"htpasswdid.pem": 0o644, "keyid.pem": 0o600}


def test_routes_shows_each_locations_policy_its_canary_and_the_weights() -> None:
    text = format_route_table(EXT, policies_table(), policies_state())
    assert ("/ → guarded, basic auth (users.htpasswd), deny 10.0.0.66/32, allow only 10.0.0.0/8 198.18.0.0/24, "
            "rate 5r/s burst 10, 4 connections, body at most 1024 bytes, headers Content-Security-Policy "
            "X-Robots-Tag, error pages 502=sorry.html 503=sorry.html, timeouts connect 2000ms read 90000ms "
            "send 500ms") in text
    assert "    / canary (header X-Canary=beta) → beta\n" in text
    assert "  minor task " in text and "  weight 10000\n" in text
    assert "    redirect → https://new.local (308)\n" in text


def test_with_the_lua_balancer_weighted_and_canary_pools_keep_their_upstream_blocks() -> None:
    """The balancer takes a pool's tasks in plain turn: weights, failure knobs and a canary's split are
    nginx's, so those pools keep their `upstream` blocks, and the config still passes nginx -t."""
    lua = EXT.model_copy(update={"config": EXT.config.model_copy(update={"lua_balancer": True})})
    table = build_route_table(policies_state(), lua)
    text = render_nginx(lua, table, server_info=INFO).text
    hosts = {h.host: h.paths[0] for h in table.hosts if h.paths}
    split, canary, guarded = hosts["split.local"], hosts["canary.local"], hosts["guarded.local"]
    assert canary.canary is not None
    upstreams = set(re.findall(r"^    upstream (\S+) \{", text, re.M))
    assert {split.pool, canary.pool, canary.canary.pool, "swarmgate_balancer"} <= upstreams
    assert guarded.pool not in upstreams
    assert f"set $swarmgate_pool {guarded.pool};" in text
    nginx_check(text)

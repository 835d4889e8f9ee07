"""`com.docker.lb.*` labels → typed routing, or set aside with a reason a user understands."""

from __future__ import annotations

import pytest

from swarmgate.models.routing.labels import (
    KNOWN_LABELS,
    REASON_KINDS,
    ServiceRouting,
    SetAside,
    parse_service_labels,
)

BASE = {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"}


def lb(**labels: str) -> dict[str, str]:
    return {**BASE, **{f"com.docker.lb.{k}": v for k, v in labels.items()}}


def test_a_service_without_lb_labels_is_not_routed_and_not_reported() -> None:
    assert parse_service_labels("db", {"com.docker.stack.namespace": "app"}) is None


def test_the_seed_demo_labels_parse_to_a_route_on_demo_local_port_8080() -> None:
    assert parse_service_labels("demo", BASE) == ServiceRouting(service="demo", hosts=("demo.local",), port=8080)


VALID = [
    pytest.param(lb(hosts="B.example.com, a.example.com,a.example.com"),
                 {"hosts": ("a.example.com", "b.example.com")}, id="hosts-lowercased-deduplicated-sorted"),
    pytest.param(lb(hosts="*.example.com"), {"hosts": ("*.example.com",)}, id="wildcard-host"),
    pytest.param(lb(port="1"), {"port": 1}, id="port-1"),
    pytest.param(lb(port="65535"), {"port": 65535}, id="port-65535"),
    pytest.param(lb(network="demo_net"), {"network": "demo_net"}, id="network"),
    pytest.param(lb(context_root="/app/"), {"context_root": "/app"}, id="context-root-trailing-slash"),
    pytest.param(lb(context_root="/api/v1", context_root_rewrite="true"),
                 {"context_root": "/api/v1", "context_root_rewrite": True}, id="context-root-rewrite"),
    pytest.param(lb(ssl_cert="demo.crt", ssl_key="demo.key"), {"ssl_cert": "demo.crt", "ssl_key": "demo.key"},
                 id="tls"),
    pytest.param(lb(ssl_passthrough="false"), {}, id="ssl-passthrough-false"),
    pytest.param(lb(websocket_endpoints="/ws,/live/"), {"websocket_endpoints": ("/live", "/ws")}, id="websocket"),
    pytest.param(lb(service_cluster="east"), {"service_cluster": "east"}, id="service-cluster"),
    pytest.param(lb(sticky_session_cookie="session_id"), {"sticky_session_cookie": "session_id"}, id="sticky"),
    pytest.param(lb(ip_hash="1"), {"ip_hash": True}, id="ip-hash-go-bool"),
    pytest.param(lb(hosts="a.local,old.local,demo.local",
                    redirects="http://old.local,http://new.local;https://a.local,https://b.local:8443/x"),
                 {"hosts": ("a.local", "demo.local", "old.local"),
                  "redirects": (("a.local", "https://b.local:8443/x"), ("old.local", "http://new.local"))},
                 id="redirects-from-own-hosts"),
    pytest.param(lb(backend_mode="task"), {}, id="backend-mode-task"),
    pytest.param(lb(backend_mode="vip"), {"backend_mode": "vip"}, id="backend-mode-vip-parses"),
    pytest.param(lb(default_backend="True"), {"default_backend": True}, id="default-backend"),
    pytest.param({"com.docker.lb.default_backend": "true", "com.docker.lb.port": "80"},
                 {"hosts": (), "port": 80, "default_backend": True}, id="default-backend-needs-no-hosts"),
]


@pytest.mark.parametrize(("labels", "fields"), VALID)
def test_valid_labels_become_typed_values(labels: dict[str, str], fields: dict[str, object]) -> None:
    expected = ServiceRouting(service="svc", **{"hosts": ("demo.local",), "port": 8080, **fields})  # type: ignore[arg-type]
    assert parse_service_labels("svc", labels) == expected


INVALID = [
    pytest.param(lb(port="eighty"), "label com.docker.lb.port: expected an integer 1-65535, got 'eighty'",
                 id="port-word"),
    pytest.param(lb(port="0"), "label com.docker.lb.port: expected an integer 1-65535, got '0'", id="port-0"),
    pytest.param(lb(port="65536"), "label com.docker.lb.port: expected an integer 1-65535, got '65536'",
                 id="port-too-big"),
    pytest.param(lb(port="\uff18\uff10"), "label com.docker.lb.port: expected an integer 1-65535, got '\uff18\uff10'",
                 id="port-fullwidth-digits"),
    pytest.param(lb(hosts="demo.local;evil"),
                 "label com.docker.lb.hosts: expected host names (RFC 1123: letters, digits, '-' and '.'), "
                 "got 'demo.local;evil'", id="host-semicolon"),
    pytest.param(lb(hosts="-bad.local"), "label com.docker.lb.hosts: expected host names", id="host-leading-dash"),
    pytest.param(lb(hosts="a" * 64 + ".local"), "label com.docker.lb.hosts: expected host names",
                 id="host-label-too-long"),
    pytest.param(lb(hosts="demo.local:8080"), "label com.docker.lb.hosts: expected host names", id="host-port"),
    pytest.param(lb(hosts=" , "), "label com.docker.lb.hosts: expected a comma-separated list of host names",
                 id="hosts-empty"),
    pytest.param(lb(context_root="app"),
                 "label com.docker.lb.context_root: expected an absolute path of letters, digits and '._~-' "
                 "(like /app), got 'app'", id="path-relative"),
    pytest.param(lb(context_root="/a{b}"), "label com.docker.lb.context_root: expected an absolute path",
                 id="path-brace"),
    pytest.param(lb(context_root="/a/../b"), "label com.docker.lb.context_root: expected an absolute path",
                 id="path-dotdot"),
    pytest.param(lb(context_root="/$host"), "label com.docker.lb.context_root: expected an absolute path",
                 id="path-variable"),
    pytest.param(lb(context_root_rewrite="yes"),
                 "label com.docker.lb.context_root_rewrite: expected true or false, got 'yes'", id="bool"),
    pytest.param(lb(ssl_cert="a/b", ssl_key="k"), "label com.docker.lb.ssl_cert: expected a name", id="secret"),
    pytest.param(lb(ssl_cert="demo.crt"), "label com.docker.lb.ssl_cert needs com.docker.lb.ssl_key as well",
                 id="cert-without-key"),
    pytest.param(lb(sticky_session_cookie="a b"),
                 "label com.docker.lb.sticky_session_cookie: expected a cookie name (an RFC 6265 token), "
                 "got 'a b'", id="cookie-space"),
    pytest.param(lb(sticky_session_cookie="my-session"),
                 "label com.docker.lb.sticky_session_cookie: nginx can only address cookies named with letters, "
                 "digits and '_', got 'my-session'", id="cookie-dash"),
    pytest.param(lb(redirects="http://a.local"), "label com.docker.lb.redirects: expected 'source,target;",
                 id="redirect-no-target"),
    pytest.param(lb(redirects="http://a.local,http://b.local/$uri"),
                 "label com.docker.lb.redirects: expected an absolute path", id="redirect-variable"),
    pytest.param(lb(redirects="http://a.local,javascript://b.local"),
                 "label com.docker.lb.redirects: expected a URL", id="redirect-scheme"),
    pytest.param(lb(redirects="http://a.local,http://b.local?x=1"), "label com.docker.lb.redirects: expected a URL",
                 id="redirect-query"),
    pytest.param(lb(backend_mode="dnsrr"),
                 "label com.docker.lb.backend_mode: expected task, default or vip, got 'dnsrr'",
                 id="backend-mode"),
    pytest.param({"com.docker.lb.port": "8080"},
                 "label com.docker.lb.hosts is missing (or set com.docker.lb.default_backend=true)", id="no-hosts"),
    pytest.param({"com.docker.lb.hosts": "demo.local"},
                 "label com.docker.lb.port is missing: the container port to route to", id="no-port"),
    # `$` in a pattern also matches before a trailing newline: every pattern must match the whole value.
    pytest.param(lb(hosts="demo\n.local"), "label com.docker.lb.hosts: expected host names",
                 id="host-newline-inside"),
    pytest.param(lb(ssl_cert="demo.crt\n", ssl_key="demo.key"), "label com.docker.lb.ssl_cert: expected a name",
                 id="secret-trailing-newline"),
    pytest.param(lb(sticky_session_cookie="sid\n"), "label com.docker.lb.sticky_session_cookie: expected a cookie",
                 id="cookie-trailing-newline"),
    pytest.param(lb(network="net\n"), "label com.docker.lb.network: expected a name", id="network-trailing-newline"),
    pytest.param(lb(sticky_session_cookie="s" * 257),
                 "label com.docker.lb.sticky_session_cookie: expected a cookie name of at most 256 characters",
                 id="cookie-longer-than-nginx-takes"),
    pytest.param(lb(hosts=",".join(f"h{i}.local" for i in range(1001))),
                 "label com.docker.lb.hosts: expected at most 1000 host names, got 1001", id="too-many-hosts"),
    pytest.param(lb(websocket_endpoints=",".join(f"/ws{i}" for i in range(101))),
                 "label com.docker.lb.websocket_endpoints: expected at most 100 paths, got 101",
                 id="too-many-websocket-endpoints"),
    pytest.param(lb(hosts="swarmgate-control.invalid"),
                 "label com.docker.lb.hosts: host names under .invalid are reserved for swarmgate",
                 id="host-reserved-for-the-control-server"),
    pytest.param(lb(hosts="*.invalid"), "label com.docker.lb.hosts: host names under .invalid are reserved",
                 id="wildcard-over-the-control-server"),
]


@pytest.mark.parametrize(("labels", "reason"), INVALID)
def test_invalid_label_sets_the_service_aside_with_a_reason(labels: dict[str, str], reason: str) -> None:
    result = parse_service_labels("svc", labels)
    assert isinstance(result, SetAside)
    assert result.service == "svc"
    assert result.reason.startswith(reason)
    assert "\n" not in result.reason


def test_a_misspelt_label_is_a_notice_with_the_close_match_not_a_set_aside() -> None:
    result = parse_service_labels("svc", {**BASE, "com.docker.lb.sticky_session_cokie": "sid"})
    assert result == ServiceRouting(
        service="svc", hosts=("demo.local",), port=8080,
        notices=("service svc: label 'com.docker.lb.sticky_session_cokie' is not known to swarmgate; ignored "
                 "(did you mean com.docker.lb.sticky_session_cookie?)",),
    )


def test_a_reason_escapes_control_characters_of_the_value() -> None:
    result = parse_service_labels("svc", lb(port="80\n; evil"))
    assert isinstance(result, SetAside)
    assert result.reason == "label com.docker.lb.port: expected an integer 1-65535, got '80\\n; evil'"


def test_a_redirect_from_a_host_the_service_does_not_route_is_dropped_with_a_notice() -> None:
    result = parse_service_labels("svc", lb(hosts="new.local",
                                            redirects="http://old.local,http://new.local;http://new.local,"
                                                      "https://new.local"))
    assert result == ServiceRouting(
        service="svc", hosts=("new.local",), port=8080, redirects=(("new.local", "https://new.local"),),
        notices=("service svc: redirect from old.local refused: the service does not route old.local "
                 "(add it to com.docker.lb.hosts to redirect it)",),
    )


def test_every_set_aside_kind_is_one_closed_list() -> None:
    assert len(REASON_KINDS) == len(set(REASON_KINDS))
    assert set(KNOWN_LABELS) | {"missing_secret", "forbidden_secret", "unusable_secret"} <= set(REASON_KINDS)

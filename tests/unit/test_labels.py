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
    # HTTPS: Interlock's labels, and swarmgate's own for what Interlock had none.
    pytest.param(lb(ssl_cert="c", ssl_key="k", ssl_only="true"), {"ssl_cert": "c", "ssl_key": "k", "ssl_only": True},
                 id="ssl-only-with-tls"),
    pytest.param(lb(ssl_passthrough="true", ssl_only="1"), {"ssl_passthrough": True, "ssl_only": True},
                 id="ssl-only-with-passthrough"),
    pytest.param(lb(ssl_only="false"), {}, id="ssl-only-false-needs-no-tls"),
    pytest.param(lb(ssl_backend="true"), {"ssl_backend": True}, id="ssl-backend"),
    pytest.param(lb(ssl_backend="true", ssl_backend_tls_verify="none"),
                 {"ssl_backend": True, "ssl_backend_tls_verify": "none"}, id="ssl-backend-verify-none"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"), "swarmgate.ssl_backend_ca": "ca.pem"},
                 {"ssl_backend": True, "ssl_backend_tls_verify": "required", "ssl_backend_ca": "ca.pem"},
                 id="ssl-backend-verify-required-with-ca"),
    pytest.param({**BASE, "swarmgate.hsts": "365d", "swarmgate.hsts_subdomains": "true",
                  "swarmgate.hsts_preload": "true"},
                 {"hsts": 31536000, "hsts_subdomains": True, "hsts_preload": True}, id="hsts-days-and-flags"),
    pytest.param({**BASE, "swarmgate.hsts": "63072000"}, {"hsts": 63072000}, id="hsts-seconds"),
    pytest.param({**BASE, "swarmgate.hsts": "0"}, {"hsts": 0}, id="hsts-0-clears-the-browsers-policy"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "2s"}, {"backend_idle_timeout": 2.0}, id="idle-gunicorn"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "1.5"}, {"backend_idle_timeout": 1.5}, id="idle-bare"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "250ms"}, {"backend_idle_timeout": 0.25}, id="idle-ms"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "0"}, {"backend_idle_timeout": 0.0}, id="idle-0-no-reuse"),
    pytest.param({**BASE, "swarmgate.managed-by": "x", "swarmgate.hstss": "1"}, {},
                 id="other-swarmgate-labels-are-not-routing-labels"),
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
    pytest.param(lb(ssl_only="maybe"), "label com.docker.lb.ssl_only: expected true or false, got 'maybe'",
                 id="ssl-only-maybe"),
    pytest.param(lb(ssl_only="true"), "label com.docker.lb.ssl_only=true, but the service gives its hosts no HTTPS",
                 id="ssl-only-without-tls"),
    pytest.param(lb(ssl_backend="true", ssl_backend_tls_verify="strict"),
                 "label com.docker.lb.ssl_backend_tls_verify: expected none or required, got 'strict'",
                 id="tls-verify-strict"),
    pytest.param(lb(ssl_backend_tls_verify="none"),
                 "label com.docker.lb.ssl_backend_tls_verify needs com.docker.lb.ssl_backend=true",
                 id="tls-verify-without-ssl-backend"),
    pytest.param(lb(ssl_backend="true", ssl_backend_tls_verify="required"),
                 "label com.docker.lb.ssl_backend_tls_verify=required needs swarmgate.ssl_backend_ca",
                 id="required-without-ca"),
    pytest.param({**lb(ssl_backend="true"), "swarmgate.ssl_backend_ca": "ca.pem"},
                 "label swarmgate.ssl_backend_ca is used only with com.docker.lb.ssl_backend_tls_verify=required",
                 id="ca-without-required"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"), "swarmgate.ssl_backend_ca": "a/b"},
                 "label swarmgate.ssl_backend_ca: expected a name", id="ca-not-a-secret-name"),
    pytest.param(lb(ssl_backend="true", ssl_passthrough="true"),
                 "label com.docker.lb.ssl_backend: with com.docker.lb.ssl_passthrough the proxy never decrypts",
                 id="ssl-backend-with-passthrough"),
    pytest.param({**BASE, "swarmgate.hsts": "1y"}, "label swarmgate.hsts: expected a max-age such as 365d",
                 id="hsts-unit-unknown"),
    pytest.param({**BASE, "swarmgate.hsts": "3651d"}, "label swarmgate.hsts: expected a max-age", id="hsts-too-long"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "2m"},
                 "label swarmgate.backend_idle_timeout: expected the tasks' idle timeout", id="idle-minutes"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "3601s"},
                 "label swarmgate.backend_idle_timeout: expected at most 3600s", id="idle-too-long"),
    pytest.param({**BASE, "swarmgate.backend_idle_timeout": "-1s"},
                 "label swarmgate.backend_idle_timeout: expected the tasks' idle timeout", id="idle-negative"),
    pytest.param({**BASE, "swarmgate.hsts": "365d; preload"}, "label swarmgate.hsts: expected a max-age",
                 id="hsts-with-directives"),
    pytest.param({**BASE, "swarmgate.hsts_preload": "true"},
                 "label swarmgate.hsts_preload needs swarmgate.hsts=<max-age>", id="preload-without-hsts"),
    pytest.param({**BASE, "swarmgate.hsts": "1d", "swarmgate.hsts_subdomains": "yes"},
                 "label swarmgate.hsts_subdomains: expected true or false", id="subdomains-not-a-bool"),
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
    assert {"ssl_only_without_tls", "ssl_backend_ca", "hsts", "hsts_preload", "hsts_subdomains"} <= set(REASON_KINDS)


@pytest.mark.parametrize(("labels", "kind"), [
    pytest.param(lb(ssl_only="true"), "ssl_only_without_tls", id="ssl-only-without-tls"),
    pytest.param(lb(ssl_backend="true", ssl_backend_tls_verify="required"), "ssl_backend_ca", id="no-ca"),
    pytest.param(lb(ssl_backend_tls_verify="required"), "ssl_backend_tls_verify", id="verify-without-backend"),
    pytest.param({**BASE, "swarmgate.hsts": "forever"}, "hsts", id="hsts"),
])
def test_https_label_problems_have_their_own_kind(labels: dict[str, str], kind: str) -> None:
    result = parse_service_labels("svc", labels)
    assert isinstance(result, SetAside) and result.kind == kind, result


def test_swarmgate_labels_alone_do_not_route_a_service() -> None:
    assert parse_service_labels("svc", {"swarmgate.hsts": "365d"}) is None

"""Property: for arbitrary label values, a service is set aside with a reason, or the rendered config
passes nginx -t and contains no directive, block, server name, location or cookie the labels did not
ask for. The output is parsed with crossplane (a real nginx config parser), not with regexes.

Two budgets: crossplane checks are cheap and run on many examples; nginx -t costs ~10-20 ms a run and
runs on fewer.
"""

from __future__ import annotations

import ipaddress
import re
import tempfile
from pathlib import Path
from typing import Any

import crossplane
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmgate.models.routing.labels import (
    KNOWN_LABELS,
    OWN_LABELS,
    OWN_PREFIX,
    PREFIX,
    REASON_KINDS,
    parse_service_labels,
)
from swarmgate.models.routing.policy_labels import POLICY_LABELS
from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.routing.tls_secrets import unusable_secret_names
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import OWNER, OWNER_LABEL
from swarmgate.renderers.nginx import CONTROL_HOST as CONTROL_SERVER_NAME
from swarmgate.renderers.nginx import control_server, render_nginx
from swarmgate.renderers.passthrough import MODULES, TERMINATE_SOCKET
from swarmgate.renderers.validate import nginx_check
from tests.factories import node, service, swarm_config, swarm_secret, task

EXT = Extension(name="default", publish_mode="host")
INFO = "swarmgate/0.1.0 linux/amd64"
CONTROL_HOST = "control.local"

PLAUSIBLE: dict[str, list[str]] = {
    "hosts": ["demo.local", "a.example.com,b.example.com", "*.example.com", "UPPER.local", CONTROL_HOST,
              "old.local,new.local", "swarmgate-control.invalid",
              "1.example.com", "10.0.0.1", "xn--bcher-kva.example", ".".join(["a" * 63, "b" * 63, "c" * 63, "local"])],
    "port": ["8080", "80"],
    "network": ["demo_net"],
    "context_root": ["/app", "/api/v1/", "/", "/a.b~c-d"],
    "context_root_rewrite": ["true", "false"],
    "ssl_cert": ["demo.crt", "combined.pem", "no-such-secret", "swarmgate-channel", "owned.pem"],
    "ssl_key": ["demo.key", "combined.pem", "no-such-secret", "swarmgate-channel", "owned.pem"],
    "ssl_passthrough": ["false", "true"],
    "websocket_endpoints": ["/ws", "/ws,/live", "/app/ws"],
    "service_cluster": ["", "east"],
    "sticky_session_cookie": ["sid", "session_id"],
    "ip_hash": ["true", "0"],
    "redirects": ["http://old.local,http://new.local", "http://a.local,https://b.local:8443/x",
                  f"http://{CONTROL_HOST},http://evil.local"],
    "backend_mode": ["task", "default"],
    "default_backend": ["true", "false"],
    "ssl_only": ["true", "false"],
    "ssl_backend": ["true", "false"],
    "ssl_backend_tls_verify": ["none", "required"],
    # swarmgate's own labels (OWN_PREFIX)
    "ssl_backend_ca": ["ca.pem", "no-such-secret", "swarmgate-channel", "owned.pem"],
    "hsts": ["365d", "0", "31536000", "12h"],
    "hsts_subdomains": ["true", "false"],
    "hsts_preload": ["true", "false"],
    "acme": ["true", "false"],
    # policies (OWN_PREFIX too; `response_header` is a prefix: swarmgate.response_header.X-Test)
    "allow": ["10.0.0.0/8", "127.0.0.1,::1"],
    "deny": ["198.18.0.1", "2001:db8::/32"],
    "auth_secret": ["demo.crt", "no-such-secret", "swarmgate-channel", "owned.pem"],
    "rate_limit": ["10r/s", "600r/m", "99000r/s"],
    "rate_burst": ["0", "20"],
    "conn_limit": ["10", "65535"],
    "max_body_size": ["1m", "0", "64g"],
    "response_header": ["nosniff", "default-src 'self'; img-src *"],
    "error_page_502": ["page.html", "no-such-page", "bare-config"],
    "error_page_503": ["page.html"],
    "error_page_504": ["page.html"],
    "redirect_code": ["301", "308"],
    "weight": ["10", "100"],
    "canary": ["header:X-Canary=on", "cookie:canary=1"],
    "max_fails": ["0", "3"],
    "fail_timeout": ["10s", "1m"],
    "connect_timeout": ["2s", "500ms"],
    "read_timeout": ["60s"],
    "send_timeout": ["1h"],
    "backend_idle_timeout": ["2s", "0", "500ms", "1.5", "3600s"],
}
ALL_LABELS = (*KNOWN_LABELS, *OWN_LABELS, *POLICY_LABELS)


def key(name: str) -> str:
    if name == "response_header":
        return f"{OWN_PREFIX}response_header.X-Test"
    return f"{OWN_PREFIX if name in OWN_LABELS or name in POLICY_LABELS else PREFIX}{name}"
# Pieces of nginx syntax and of the URL/host grammars, to splice into otherwise plausible values.
FRAGMENTS = [";", "{", "}", "$host", "${x}", "\n", "\r", "#", "'", '"', " ", "\t", "\\", "/", ",", ":", "*",
             "..", "%00", "\x00", "é", "return 200", "= /", "~", "@", "?", "&", "include /etc/passwd"]


def fuzzed_value(name: str) -> st.SearchStrategy[str]:
    plausible = st.sampled_from(PLAUSIBLE[name])
    spliced = st.lists(st.one_of(plausible, st.sampled_from(FRAGMENTS), st.text(max_size=4)), min_size=1,
                       max_size=4).map("".join)
    return st.one_of(spliced, st.text(max_size=40))


@st.composite
def lb_labels(draw: st.DrawFn) -> dict[str, str]:
    # Plausible values for a few labels, then arbitrary values for zero to two of them: with every
    # value arbitrary, almost every example would stop at the first invalid label and never render.
    names = draw(st.sets(st.sampled_from(ALL_LABELS), max_size=8))
    if draw(st.integers(0, 4)):
        names |= {"hosts", "port"}
    if names & {"ssl_cert", "ssl_key"}:
        names |= {"ssl_cert", "ssl_key"}
    labels = {key(name): draw(st.sampled_from(PLAUSIBLE[name])) for name in names}
    if names:
        for name in draw(st.lists(st.sampled_from(sorted(names)), max_size=2, unique=True)):
            labels[key(name)] = draw(fuzzed_value(name))
    if draw(st.booleans()):
        labels[f"{PREFIX}{draw(st.text(min_size=1, max_size=12))}"] = draw(st.text(max_size=10))
    return labels


# The secrets in the Swarm: TLS labels may name the usable ones; the token and owned.pem are swarmgate's.
SECRETS = [swarm_secret("demo.crt"), swarm_secret("demo.key"), swarm_secret("combined.pem"),
           swarm_secret("swarmgate-channel"), swarm_secret("owned.pem", labels={OWNER_LABEL: OWNER}),
           swarm_secret("ca.pem")]
MOUNTABLE = {"demo.crt", "demo.key", "combined.pem", "ca.pem"}


def snapshot(labels: dict[str, str]) -> ObservedState:
    # The fuzzed service is the younger: on a shared host the older service's settings stand.
    fuzzed = service("fuzzed", labels, host_ports=(80, 8080), created_at="2026-06-01T00:00:00Z")
    control = service("control", {f"{PREFIX}hosts": CONTROL_HOST, f"{PREFIX}port": "8080"},
                      created_at="2026-01-01T00:00:00Z")
    return ObservedState.from_api(
        services=[fuzzed, control],
        tasks=[task(fuzzed, "wrk-0", ports={80: 30080, 8080: 30000}), task(control, "wrk-0", ports={8080: 30001})],
        nodes=[node("wrk-0", "10.2.0.10")],
        secrets=SECRETS,
        configs=[swarm_config("page.html", PAGE.encode(), labels={"swarmgate.error-page": "true"}),
                 swarm_config("bare-config", b"not for the internet")],
    )


PAGE = '<p>"down" for $reasons; return 200 "x";</p>\n'


def parsed(text: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nginx.conf"
        path.write_text(text)
        payload = crossplane.parse(str(path), single=True, check_ctx=True, check_args=True, comments=False)
    assert payload["status"] == "ok", payload["errors"]
    return list(payload["config"][0]["parsed"])


def walk(block: list[dict[str, Any]], parents: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    out = []
    for item in block:
        out.append((parents, item))
        out.extend(walk(item.get("block", []), (*parents, item["directive"])))
    return out


# Everything the default template can write, per context: any other directive came from an input.
TEMPLATE_DIRECTIVES = {
    (): {"user", "worker_processes", "worker_rlimit_nofile", "pid", "error_log", "events", "http", "include",
         "stream", "worker_shutdown_timeout"},
    ("events",): {"worker_connections"},
    ("http",): {"log_format", "access_log", "server_tokens", "client_max_body_size", "client_body_buffer_size",
                "client_header_buffer_size", "large_client_header_buffers", "client_body_timeout",
                "keepalive_timeout", "underscores_in_headers", "server_names_hash_bucket_size",
                "server_names_hash_max_size", "map_hash_bucket_size", "map_hash_max_size",
                "proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout", "proxy_http_version",
                "proxy_next_upstream", "map", "upstream", "server", "set_real_ip_from", "real_ip_header",
                "proxy_ssl_server_name", "proxy_ssl_name", "proxy_ssl_session_reuse", "limit_req_zone",
                "limit_conn_zone"},
    # crossplane reads a map's keys as directives: `""`, and the host names of the shared server's pool map
    ("http", "map"): {"default", "", "hostnames"},
    ("http", "upstream"): {"zone", "hash", "ip_hash", "server", "keepalive", "keepalive_timeout"},
    ("http", "server"): {"listen", "server_name", "ssl_reject_handshake", "ssl_protocols", "ssl_ciphers",
                         "ssl_certificate", "ssl_certificate_key", "location", "add_header", "if",
                         "set"},  # $swarmgate_route, the server's route key (traffic.j2)
    ("http", "server", "if"): {"return"},
    ("http", "server", "location"): {"proxy_pass", "proxy_set_header", "add_header", "return", "if", "stub_status",
                                     "access_log", "proxy_ssl_verify", "proxy_ssl_trusted_certificate",
                                     "proxy_ssl_verify_depth",
                                     # policies
                                     "allow", "deny", "auth_basic", "auth_basic_user_file", "set", "limit_req",
                                     "limit_req_status", "limit_conn", "limit_conn_status", "client_max_body_size",
                                     "proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout",
                                     "error_page", "default_type"},
    ("http", "server", "location", "if"): {"return", "set"},
    # SSL passthrough: the SNI maps (keys are host names), the passthrough pools, the two servers.
    ("stream",): {"map_hash_bucket_size", "map_hash_max_size", "map", "upstream", "server"},
    ("stream", "map"): {"default", "hostnames"},
    ("stream", "upstream"): {"server"},
    ("stream", "server"): {"listen", "ssl_preread", "proxy_protocol", "proxy_pass"},
}


def without_control_server(text: str) -> str:
    """The text minus swarmgate's control server, which must be there exactly once and verbatim (no
    label can reach it: its `.invalid` host name is reserved)."""
    # On the TLS port, or behind the SNI router on its socket when SSL passthrough takes the port.
    blocks = [control_server(EXT).strip(),
              control_server(EXT, listen=f"unix:{TERMINATE_SOCKET} ssl proxy_protocol").strip()]
    assert sum(text.count(block) for block in blocks) == 1
    for block in blocks:
        text = text.replace(block, "")
    return text


def assert_nothing_unasked(text: str, labels: dict[str, str]) -> None:
    text = without_control_server(text)
    asked = {name: labels.get(key(name), "") for name in ALL_LABELS}
    raw_hosts = (asked["hosts"] + "," + asked["redirects"]).lower()
    raw_paths = asked["context_root"] + "," + asked["websocket_endpoints"]
    for parents, item in walk(parsed(text)):
        directive, args = item["directive"], item["args"]
        if parents == ("stream", "map") and directive not in TEMPLATE_DIRECTIVES[parents]:
            assert directive.lstrip("\\") in raw_hosts and len(args) == 1, (directive, args)
            continue
        if parents == () and directive == "include":
            assert args == [MODULES], args  # the stream module, nothing a label chose
        if parents == ("stream", "upstream") and directive == "server":
            assert args[0] in ("10.2.0.10:30000", "10.2.0.10:30080"), args
        if parents == ("http", "map") and directive not in TEMPLATE_DIRECTIVES[parents]:
            # A host of the shared server and its pool (or "" for 503), nothing else.
            assert directive in (CONTROL_HOST,) or directive in raw_hosts, directive
            assert directive != CONTROL_SERVER_NAME and len(args) == 1, (directive, args)
            continue
        assert directive in TEMPLATE_DIRECTIVES.get(parents, set()), (parents, directive)
        if directive == "server_name":
            (name,) = args
            assert name in ("_", CONTROL_HOST) or name in raw_hosts, name
            assert name != CONTROL_SERVER_NAME, "only swarmgate's control server may answer its name"
        elif directive == "location" and args[0].startswith("@swarmgate_page_"):
            assert any(asked[page] for page in ("error_page_502", "error_page_503", "error_page_504")), args
        elif directive == "location":
            path = args[-1].rstrip("/") or "/"
            assert path == "/" or path in raw_paths or args == ["=", "/nginx_status"], args
        elif directive == "return" and len(args) == 2 and args[0] in ("502", "503", "504") and args[1] != "":
            assert "&#36;reasons" in args[1] and "$" not in args[1], args  # an error page: no variable in it
        elif directive in ("allow", "deny"):
            assert args == ["all"] or ipaddress.ip_network(args[0]), args
        elif directive == "auth_basic_user_file":
            assert args == [f"/run/secrets/{asked['auth_secret']}"], args
        elif directive == "hash":
            assert args[0].removeprefix("$cookie_") in asked["sticky_session_cookie"], args
        elif directive in ("ssl_certificate", "ssl_certificate_key"):
            secret = args[0].removeprefix("/run/secrets/")
            assert secret in (asked["ssl_cert"], asked["ssl_key"]), args
        elif directive == "return":
            assert args[0] == "503" or (args[0] in ("301", "302", "307", "308") and args[1].endswith("$request_uri")) \
                or args == ["301", "https://$host$request_uri"], args
        elif directive == "if" and parents == ("http", "server"):
            assert args == ["$uri", "!~", "^/\\.well-known/acme-challenge/"], args  # ssl_only
        elif directive == "proxy_ssl_trusted_certificate":
            assert args == [f"/run/secrets/{asked['ssl_backend_ca']}"], args
        elif directive == "add_header" and args[0] == "Strict-Transport-Security":
            assert asked["hsts"] and _HSTS.fullmatch(args[1]) and args[2:] == ["always"], args
        elif parents == ("http", "upstream") and directive == "server":
            assert args[0] in ("10.2.0.10:30000", "10.2.0.10:30080", "10.2.0.10:30001"), args


_HSTS = re.compile(r"max-age=[0-9]+(; includeSubDomains)?(; preload)?")


def check(labels: dict[str, str]) -> str:
    """The rendered text, after checking set-aside reasons and that nothing unasked-for was rendered."""
    observed = snapshot(labels)
    table = build_route_table(observed, EXT)
    control = next((h for h in table.hosts if h.host == CONTROL_HOST), None)
    for aside in table.set_aside:
        assert aside.reason and "\n" not in aside.reason and "\r" not in aside.reason
        assert aside.kind in REASON_KINDS
    assert control is not None, "a bad service must never take the other services' routes down"
    # The control service's own pool is always there; only a service sharing its host joins it.
    assert any("control" in p.services for p in control.paths), control
    # A redirect answers every request of its host: never one the fuzzed service does not route.
    assert control.redirect is None
    # Swarm refuses a proxy spec naming a missing secret: only existing, non-swarmgate secrets.
    assert set(table.secrets) <= MOUNTABLE, table.secrets
    text = render_nginx(EXT, table, server_info=INFO).text
    assert_nothing_unasked(text, labels)
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lb_labels())
def test_arbitrary_labels_are_set_aside_or_render_only_what_they_asked_for(labels: dict[str, str]) -> None:
    check(labels)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lb_labels())
def test_arbitrary_labels_never_yield_a_config_nginx_rejects(labels: dict[str, str]) -> None:
    nginx_check(check(labels))


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.one_of(st.text(max_size=30), st.sampled_from([key(n) for n in ALL_LABELS])),
                       st.text(max_size=60), max_size=10))
def test_label_parsing_never_raises_on_any_labels(labels: dict[str, str]) -> None:
    result = parse_service_labels("svc", labels)
    assert result is None or result.service == "svc"


SECRET_NAMES = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.lists(SECRET_NAMES, max_size=3))
def test_unusable_secret_names_only_ever_names_a_path_in_the_message(noise: str, names: list[str]) -> None:
    message = noise + "".join(f'cannot load certificate "/run/secrets/{n}": PEM_read_bio_X509_AUX() failed\n'
                              for n in names)
    found = unusable_secret_names(message)
    assert set(names) <= found
    assert all(f"/run/secrets/{n}" in message for n in found)


@settings(max_examples=200, deadline=None)
@given(SECRET_NAMES)
def test_a_file_nginx_could_not_open_never_names_a_secret(name: str) -> None:
    message = (f'nginx: [emerg] cannot load certificate key "/run/secrets/{name}": BIO_new_file() failed '
               f"(SSL: error:80000002:system library::No such file or directory:calling fopen(/run/secrets/{name}, r))")
    assert unusable_secret_names(message) == frozenset()


@st.composite
def plausible_labels(draw: st.DrawFn) -> dict[str, str]:
    """Valid-looking labels only: what two well-meaning services combine into (shared hosts, TLS on one
    and not the other, wildcard over exact, redirects, cookies) rather than what one attacker types."""
    names = draw(st.sets(st.sampled_from(ALL_LABELS), max_size=8)) | {"hosts", "port"}
    if names & {"ssl_cert", "ssl_key"}:
        names |= {"ssl_cert", "ssl_key"}
    return {key(name): draw(st.sampled_from(PLAUSIBLE[name])) for name in names}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_labels(), plausible_labels(), st.booleans())
def test_two_services_combined_never_yield_a_config_nginx_rejects_nor_take_the_control_route(
    first: dict[str, str], second: dict[str, str], second_is_older: bool
) -> None:
    one = service("one", first, host_ports=(80, 8080), created_at="2026-03-01T00:00:00Z")
    two = service("two", second, host_ports=(80, 8080),
                  created_at="2026-02-01T00:00:00Z" if second_is_older else "2026-04-01T00:00:00Z")
    control = service("control", {f"{PREFIX}hosts": CONTROL_HOST, f"{PREFIX}port": "8080"},
                      created_at="2026-01-01T00:00:00Z")
    observed = ObservedState.from_api(
        services=[one, two, control],
        tasks=[task(one, "wrk-0", ports={80: 30080, 8080: 30000}), task(two, "wrk-0", ports={80: 30081, 8080: 30002}),
               task(control, "wrk-0", ports={8080: 30001})],
        nodes=[node("wrk-0", "10.2.0.10")], secrets=SECRETS)
    table = build_route_table(observed, EXT)
    (control_host,) = [h for h in table.hosts if h.host == CONTROL_HOST]
    assert control_host.redirect is None and any("control" in p.services for p in control_host.paths)
    assert set(table.secrets) <= MOUNTABLE
    nginx_check(render_nginx(EXT, table, server_info=INFO).text)

"""One bad service never takes the others down: every per-service input that could make nginx reject
the whole config, or Swarm the whole proxy spec, is set aside or rendered harmlessly.

Each case routes one good service next to one bad one, renders the config, runs the real `nginx -t`
on it, and checks that the good service's route is there, that the bad one is set aside with the
expected kind (or rendered), and that every secret the proxy would mount exists and is not
swarmgate's own (Swarm refuses a spec naming a missing secret).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from swarmgate.models.routing.labels import REASON_KINDS as METRIC_REASONS
from swarmgate.models.routing.routes import RouteTable, build_route_table
from swarmgate.models.routing.tls_secrets import (
    SECRETS_DIR,
    is_forbidden,
    mounted_secret_ids,
    still_present,
    unusable_secret_ids,
    unusable_secret_names,
)
from swarmgate.models.settings.config import load_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary, nginx_check
from tests.factories import node, service, swarm_secret, task
from tests.unit.test_render import GOLDEN

EXT = load_config(GOLDEN / "seed-config.toml").extensions["default"]
INFO = "swarmgate/0.1.0 linux/amd64"
OLD, NEW = "2026-01-01T00:00:00Z", "2026-06-01T00:00:00Z"
NODES = [node("wrk-0", "198.18.0.20"), node("wrk-1", "198.18.0.21")]
SECRETS = [swarm_secret("good.crt"), swarm_secret("good.key"), swarm_secret("combined.pem"),
           swarm_secret("swarmgate-channel", labels={"swarmgate.channel.certificate-sha256": "ab" * 32}),
           swarm_secret("interlock-proxy.agent", labels={"swarmgate.managed-by": "swarmgate"}),
           swarm_secret("ca.pem"), swarm_secret("broken.crt")]
BROKEN_ID = SECRETS[-1]["ID"]
GOOD = service("good", {"com.docker.lb.hosts": "good.local", "com.docker.lb.port": "8080"}, created_at=OLD)
GOOD_TASK = task(GOOD, "wrk-0", ports={8080: 31000})


def lb(hosts: str = "bad.local", **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


def host(length: int, tag: str = "h") -> str:
    """A valid host name of exactly `length` characters (labels of at most 63)."""
    body = (tag + "a" * 300)[: length - len(".local")]
    labels = [body[i:i + 62] for i in range(0, len(body), 63)]
    name = ".".join(labels) + ".local"
    return name + "b" * (length - len(name)) if len(name) < length else name[:length]


# (labels of the bad service, expected kind when set aside, or None when it is rendered)
CASES: list[Any] = [
    # Swarm secrets: the proxy service spec names every TLS secret of the table.
    pytest.param(lb(ssl_cert="no-such-secret", ssl_key="good.key"), "missing_secret", id="cert-secret-missing"),
    pytest.param(lb(ssl_cert="good.crt", ssl_key="no-such-key"), "missing_secret", id="key-secret-missing"),
    pytest.param(lb(ssl_cert="swarmgate-channel", ssl_key="good.key"), "forbidden_secret",
                 id="cert-is-the-proxy-token"),
    pytest.param(lb(ssl_cert="good.crt", ssl_key="interlock-proxy.agent"), "forbidden_secret",
                 id="key-is-a-swarmgate-owned-secret"),
    pytest.param(lb(ssl_cert="broken.crt", ssl_key="good.key"), "unusable_secret",
                 id="cert-a-proxy-could-not-load"),
    pytest.param(lb(ssl_cert="good.crt"), "ssl_cert", id="cert-without-key"),
    pytest.param(lb(ssl_key="good.key"), "ssl_key", id="key-without-cert"),
    pytest.param(lb(ssl_cert="combined.pem", ssl_key="combined.pem"), None, id="cert-and-key-one-pem-secret"),
    pytest.param(lb(ssl_cert="good.crt", ssl_key="good.key"), None, id="same-secrets-as-another-host"),
    pytest.param(lb(ssl_cert="good.crt\n", ssl_key="good.key"), "ssl_cert", id="secret-name-with-newline"),
    # Host names: server_names_hash_bucket_size is computed from the longest name.
    pytest.param(lb(host(253)), None, id="host-of-253-characters"),
    pytest.param(lb(host(254)), "hosts", id="host-of-254-characters"),
    pytest.param(lb("*." + host(251)), None, id="wildcard-host-of-253-characters"),
    pytest.param(lb(",".join(host(200 + i % 50, f"n{i}") for i in range(1000))), None,
                 id="one-service-with-1000-long-hosts"),
    pytest.param(lb(",".join(f"h{i}.local" for i in range(1001))), "hosts", id="one-service-with-1001-hosts"),
    pytest.param(lb("good.local", ssl_cert="good.crt", ssl_key="good.key"), None,
                 id="younger-tls-service-on-the-good-plain-host"),
    pytest.param(lb("*.local"), None, id="wildcard-covering-the-good-host"),
    pytest.param(lb("*.local,bad.local,BAD.local, bad.local "), None, id="wildcard-and-exact-and-duplicates"),
    pytest.param(lb("good\x00.local"), "hosts", id="host-with-nul"),
    pytest.param(lb("good\n.local"), "hosts", id="host-with-newline-inside"),
    pytest.param(lb("bad.local\n"), None, id="host-with-trailing-newline-trimmed"),
    pytest.param(lb("b\u00e4d.local"), "hosts", id="host-unicode"),
    pytest.param(lb("xn--bd-via.local"), None, id="host-punycode"),
    pytest.param(lb("\u212aelvin.local"), None, id="host-kelvin-sign-lowercases-to-ascii"),
    pytest.param(lb("198.18.0.99"), None, id="host-ip-literal"),
    pytest.param(lb("swarmgate-control.invalid"), "hosts", id="host-of-the-control-server"),
    pytest.param(lb("*.invalid"), "hosts", id="wildcard-over-the-control-server"),
    # Paths: locations are written from context roots and websocket endpoints.
    pytest.param(lb("good.local", context_root="/a b"), "context_root", id="context-root-space"),
    pytest.param(lb("good.local", context_root="/a;b"), "context_root", id="context-root-semicolon"),
    pytest.param(lb("good.local", context_root="/a{b}"), "context_root", id="context-root-braces"),
    pytest.param(lb("good.local", context_root="/$uri"), "context_root", id="context-root-variable"),
    pytest.param(lb("good.local", context_root="/%2e%2e"), "context_root", id="context-root-percent"),
    pytest.param(lb("good.local", context_root="/a/../b"), "context_root", id="context-root-dotdot"),
    pytest.param(lb("good.local", context_root="/\u00e9"), "context_root", id="context-root-unicode"),
    pytest.param(lb("good.local", context_root="/a\n/b"), "context_root", id="context-root-newline"),
    pytest.param(lb("good.local", context_root="/" + "a" * 254), None, id="context-root-of-255"),
    pytest.param(lb("good.local", context_root="/" + "a" * 255), "context_root", id="context-root-of-256"),
    pytest.param(lb("good.local", context_root="/~a.b-c_d", context_root_rewrite="true"), None,
                 id="context-root-every-allowed-character-rewritten"),
    pytest.param(lb("good.local", websocket_endpoints="/ws;evil"), "websocket_endpoints", id="websocket-semicolon"),
    pytest.param(lb("good.local", websocket_endpoints="/"), None, id="websocket-on-the-good-root"),
    pytest.param(lb(context_root="/ws", websocket_endpoints="/ws,/ws/"), None, id="websocket-same-as-context-root"),
    pytest.param(lb(websocket_endpoints=",".join(f"/ws{i}" for i in range(100))), None, id="100-websocket-paths"),
    pytest.param(lb(websocket_endpoints=",".join(f"/ws{i}" for i in range(101))), "websocket_endpoints",
                 id="101-websocket-paths"),
    pytest.param(lb(",".join(f"h{i}.local" for i in range(100)), websocket_endpoints=",".join(
        f"/ws{i}" for i in range(9))), None, id="100-hosts-times-10-paths"),
    pytest.param(lb(",".join(f"h{i}.local" for i in range(100)), websocket_endpoints=",".join(
        f"/ws{i}" for i in range(10))), "too_many_routes", id="100-hosts-times-11-paths"),
    # Sticky cookies: `hash $cookie_NAME consistent;`, one nginx token (at most 4 KiB).
    pytest.param(lb("good.local", sticky_session_cookie="my-session"), "sticky_session_cookie", id="cookie-dash"),
    pytest.param(lb(sticky_session_cookie="s" * 256), None, id="cookie-of-256"),
    pytest.param(lb(sticky_session_cookie="s" * 5000), "sticky_session_cookie", id="cookie-longer-than-nginx-takes"),
    pytest.param(lb(sticky_session_cookie="sid\n"), "sticky_session_cookie", id="cookie-with-newline"),
    pytest.param(lb(sticky_session_cookie="s\u00efd"), "sticky_session_cookie", id="cookie-unicode"),
    pytest.param(lb("good.local", sticky_session_cookie="other", ip_hash="true"), None,
                 id="younger-cookie-and-ip-hash-on-the-good-pool"),
    # Ports.
    pytest.param(lb(port="0"), "port", id="port-0"),
    pytest.param(lb(port="65536"), "port", id="port-65536"),
    pytest.param(lb(port="\u0668\u0660"), "port", id="port-arabic-digits"),
    pytest.param(lb(port="8080\x00"), "port", id="port-with-nul"),
    pytest.param(lb(port="9090"), "no_host_port", id="port-not-published-in-host-mode"),
    # Redirects: only from the service's own hosts.
    pytest.param(lb(redirects="http://good.local,http://evil.local"), None, id="redirect-from-the-good-host-refused"),
    pytest.param(lb(redirects="http://bad.local,http://bad.local"), None, id="redirect-to-itself"),
    pytest.param(lb(redirects="http://bad.local,http://x.local/$uri"), "redirects", id="redirect-target-variable"),
    pytest.param(lb(redirects="http://bad.local,http://x.local:99999"), "redirects", id="redirect-target-bad-port"),
    pytest.param(lb(redirects=";".join(f"http://bad.local,http://t{i}.local" for i in range(2))), "redirects",
                 id="one-host-redirected-twice"),
    # Everything else a label can say.
    pytest.param({**lb(), "com.docker.lb.default_backend": "true"}, None, id="second-default-backend"),
    pytest.param(lb(backend_mode="vip"), "vip_backend", id="vip-backend"),
    # SSL passthrough: an SNI route on the TLS port (stream module), beside the terminated hosts.
    pytest.param(lb(ssl_passthrough="true"), None, id="ssl-passthrough"),
    pytest.param(lb("good.local", ssl_passthrough="true"), None, id="ssl-passthrough-of-the-good-host"),
    pytest.param(lb("*.wild.local,default,hostnames", ssl_passthrough="true"), None,
                 id="ssl-passthrough-wildcard-and-map-keywords"),
    pytest.param(lb(".".join(["p" * 63] * 3) + ".pass", ssl_passthrough="true"), None,
                 id="ssl-passthrough-253-char-host"),
    pytest.param(lb(ssl_passthrough="yes"), "ssl_passthrough", id="ssl-passthrough-not-a-bool"),
    pytest.param(lb(network="nope"), "network", id="network-that-does-not-exist"),
    pytest.param(lb(service_cluster="no such/cluster"), "service_cluster", id="cluster-name-invalid"),
    pytest.param(lb(network="net\n"), "network", id="network-with-newline"),
    pytest.param({**lb(), "com.docker.lb.hosts\n": "x", "com.docker.lb.\x00": "y"}, None,
                 id="unknown-labels-with-control-characters-ignored"),
    # HTTPS labels: a redirect to HTTPS, TLS to the tasks and its CA bundle (a mounted secret), HSTS.
    pytest.param(lb(ssl_cert="good.crt", ssl_key="good.key", ssl_only="true"), None, id="ssl-only"),
    pytest.param(lb("good.local", ssl_cert="good.crt", ssl_key="good.key", ssl_only="true"), None,
                 id="ssl-only-on-the-good-plain-host"),
    pytest.param(lb(ssl_passthrough="true", ssl_only="true"), None, id="ssl-only-with-passthrough"),
    pytest.param(lb(ssl_only="true"), "ssl_only_without_tls", id="ssl-only-without-tls"),
    pytest.param(lb(ssl_only="maybe"), "ssl_only", id="ssl-only-maybe"),
    pytest.param(lb(ssl_backend="true"), None, id="ssl-backend-on-a-shared-host"),
    pytest.param(lb("good.local", ssl_backend="true"), None, id="ssl-backend-on-the-good-pool-overruled"),
    pytest.param(lb(ssl_backend="true", ssl_backend_tls_verify="strict"), "ssl_backend_tls_verify",
                 id="tls-verify-strict"),
    pytest.param(lb(ssl_backend_tls_verify="none"), "ssl_backend_tls_verify", id="tls-verify-without-ssl-backend"),
    pytest.param(lb(ssl_backend="true", ssl_backend_tls_verify="required"), "ssl_backend_ca",
                 id="required-without-ca"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"), "swarmgate.ssl_backend_ca": "ca.pem"},
                 None, id="required-with-ca"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"),
                  "swarmgate.ssl_backend_ca": "no-such-ca"}, "missing_secret", id="ca-secret-missing"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"),
                  "swarmgate.ssl_backend_ca": "swarmgate-channel"}, "forbidden_secret", id="ca-is-the-channel-key"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"),
                  "swarmgate.ssl_backend_ca": "broken.crt"}, "unusable_secret", id="ca-a-proxy-could-not-load"),
    pytest.param({**lb(ssl_backend="true", ssl_backend_tls_verify="required"),
                  "swarmgate.ssl_backend_ca": "ca.pem\n"}, "ssl_backend_ca", id="ca-with-newline"),
    pytest.param({**lb(ssl_cert="good.crt", ssl_key="good.key"), "swarmgate.hsts": "365d",
                  "swarmgate.hsts_subdomains": "true", "swarmgate.hsts_preload": "true"}, None, id="hsts"),
    pytest.param({**lb("good.local"), "swarmgate.hsts": "365d"}, None, id="hsts-on-the-good-host-overruled"),
    pytest.param({**lb(), "swarmgate.hsts": "1d\"; add_header x y"}, "hsts", id="hsts-with-a-quote"),
    pytest.param({**lb(), "swarmgate.hsts": "99999999999"}, "hsts", id="hsts-too-long"),
    # Policies (swarmgate.* policy labels), played by the owner of the bad service's labels.
    pytest.param({**lb("good.local"), "swarmgate.weight": "100"}, None, id="weight-joins-the-good-host-at-most-evenly"),
    pytest.param({**lb("good.local"), "swarmgate.weight": "100000"}, "weight", id="weight-to-capture-a-host"),
    pytest.param({**lb("good.local"), "swarmgate.canary": "header:X-Canary=x"}, None,
                 id="header-canary-on-the-good-host-takes-only-opted-in-requests"),
    pytest.param({**lb("good.local"), "swarmgate.canary": "header:User-Agent=curl"}, "canary",
                 id="header-canary-on-an-ordinary-header"),
    pytest.param({**lb("good.local"), "swarmgate.deny": "0.0.0.0/0", "swarmgate.auth_secret": "good.crt"}, None,
                 id="policy-on-the-good-host-overruled-by-the-older-service"),
    pytest.param({**lb(), "swarmgate.auth_secret": "swarmgate-channel"}, "forbidden_secret",
                 id="auth-file-is-the-channel-key"),
    pytest.param({**lb(), "swarmgate.auth_secret": "no-such-file"}, "missing_secret", id="auth-file-missing"),
    pytest.param({**lb(), "swarmgate.rate_limit": "99000r/s", "swarmgate.rate_burst": "100000",
                  "swarmgate.conn_limit": "65535"}, None, id="largest-limits"),
    pytest.param({**lb(), "swarmgate.conn_limit": "65536"}, "conn_limit", id="connection-limit-nginx-refuses"),
    pytest.param({**lb(), "swarmgate.rate_limit": "10r/s;limit_req_zone"}, "rate_limit", id="rate-with-a-directive"),
    pytest.param({**lb(), "swarmgate.max_body_size": "64g", "swarmgate.read_timeout": "3600s",
                  "swarmgate.connect_timeout": "75s", "swarmgate.fail_timeout": "1h",
                  "swarmgate.max_fails": "1000"}, None, id="largest-sizes-and-timeouts"),
    pytest.param({**lb(), "swarmgate.allow": ",".join(f"10.0.{i}.0/24" for i in range(100))}, None,
                 id="hundred-networks"),
    pytest.param({**lb(), "swarmgate.allow": ",".join(f"10.0.{i}.0/24" for i in range(101))}, "allow",
                 id="too-many-networks"),
    pytest.param({**lb(), **{f"swarmgate.response_header.X-H{i}": "v" * 1024 for i in range(32)}}, None,
                 id="largest-response-headers"),
    pytest.param({**lb(), "swarmgate.response_header.X-A": "v" * 1025}, "response_header", id="header-too-long"),
    pytest.param({**lb(), "swarmgate.error_page_503": "no-such-page"}, "error_page_503", id="error-page-missing"),
    pytest.param({**lb("good.local"), "com.docker.lb.redirects": "http://good.local,http://evil.example",
                  "swarmgate.redirect_code": "301"}, None, id="redirect-code-with-a-redirect-it-may-not-make"),
]


def observed_with(bad_labels: dict[str, str], *, bad_tasks: int = 1) -> ObservedState:
    bad = service("bad", bad_labels, created_at=NEW)
    tasks = [task(bad, f"wrk-{i % 2}", slot=i + 1, ports={8080: 32000 + i}) for i in range(bad_tasks)]
    fallback = service("fallback", {"com.docker.lb.default_backend": "true", "com.docker.lb.port": "8080"},
                       created_at=OLD)
    return ObservedState.from_api(services=[GOOD, bad, fallback], tasks=[GOOD_TASK, *tasks], nodes=NODES,
                                  secrets=SECRETS)


def assert_isolated(observed: ObservedState, table: RouteTable, expected_kind: str | None) -> None:
    good = next(h for h in table.hosts if h.host == "good.local")
    root = next(p for p in good.paths if p.path == "/")
    assert "good" in root.services and good.redirect is None
    assert ("198.18.0.20", 31000) in {(u.address, u.port) for u in root.upstreams}
    aside = [s for s in table.set_aside if s.service == "bad"]
    if expected_kind is None:
        assert aside == []
    else:
        assert [s.kind for s in aside] == [expected_kind], aside
        assert expected_kind in METRIC_REASONS, "every kind is a series of swarmgate_services_set_aside"
        assert all(p.services != ("bad",) for p in table.pools)
    mountable = {s.name for s in observed.secrets if not is_forbidden(s)}
    assert set(table.secrets) <= mountable


@pytest.mark.parametrize(("bad_labels", "expected_kind"), CASES)
def test_one_bad_service_next_to_a_good_one_keeps_the_good_route_and_nginx_accepts_the_config(
    bad_labels: dict[str, str], expected_kind: str | None
) -> None:
    observed = observed_with(bad_labels)
    table = build_route_table(observed, EXT, unusable_secrets={BROKEN_ID})
    assert_isolated(observed, table, expected_kind)
    nginx_check(render_nginx(EXT, table, server_info=INFO).text)


@pytest.mark.parametrize("tasks", [pytest.param(80, id="80-tasks"), pytest.param(1500, id="1500-tasks")])
def test_a_service_with_more_tasks_than_the_configured_upstream_zone_holds_is_rendered_with_a_bigger_zone(
    tasks: int,
) -> None:
    # A 64k zone holds 63 servers: nginx -t failed with "no memory in upstream zone" for every service.
    observed = observed_with(lb(), bad_tasks=tasks)
    table = build_route_table(observed, EXT)
    assert_isolated(observed, table, None)
    nginx_check(render_nginx(EXT, table, server_info=INFO).text)


def test_a_redirect_from_another_services_host_is_refused_with_a_notice() -> None:
    table = build_route_table(observed_with(lb(redirects="http://good.local,http://evil.local")), EXT)
    assert [h.redirect for h in table.hosts] == [None, None]
    assert ("service bad: redirect from good.local refused: the service does not route good.local "
            "(add it to com.docker.lb.hosts to redirect it)") in table.notices


# ---- Secrets only nginx can judge: its real messages name them, and the loop closes. ----

def make_pem_files(directory: Path) -> None:
    """Real files a proxy might find under /run/secrets/: a good pair, another key, and non-PEM data."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=good.local",
            "-keyout", str(directory / "good.key"), "-out", str(directory / "good.crt"))
    openssl("genrsa", "-out", str(directory / "other.key"), "2048")
    openssl("req", "-x509", "-newkey", "rsa:512", "-nodes", "-days", "1", "-subj", "/CN=weak",
            "-keyout", str(directory / "weak.key"), "-out", str(directory / "weak.crt"))
    (directory / "plain-text").write_text("0123456789abcdef-not-a-certificate\n")
    (directory / "empty").write_bytes(b"")


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("run-secrets")
    make_pem_files(directory)
    return directory


def nginx_t_in_proxy(text: str, secrets_dir: Path, prefix: Path) -> str:
    """nginx -t as the proxy runs it, with /run/secrets/ being `secrets_dir`; nginx's stderr, paths as
    the proxy sees them ('' when nginx accepts the config)."""
    binary = nginx_binary()
    assert binary is not None
    conf = prefix / "nginx.conf"
    # The agent's own file in the control server (its TLS), as a proxy task has it.
    control = prefix / "control.conf"
    control.write_text(f"ssl_certificate {secrets_dir}/good.crt; ssl_certificate_key {secrets_dir}/good.key;\n")
    local = localized(text, prefix, None).replace("/var/lib/swarmgate/control/*.conf", str(control))
    conf.write_text(local.replace(SECRETS_DIR, f"{secrets_dir}/"))
    result = subprocess.run([binary, "-t", "-q", "-p", str(prefix), "-c", str(conf)], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    return "" if result.returncode == 0 else result.stderr.replace(f"{secrets_dir}/", SECRETS_DIR)


def tls_config(cert: str, key: str) -> str:
    return ("events {}\nhttp {\n    server {\n        listen 127.0.0.1:18443 ssl;\n"
            f"        ssl_certificate {SECRETS_DIR}{cert};\n        ssl_certificate_key {SECRETS_DIR}{key};\n"
            "    }\n}\n")


@pytest.mark.parametrize(
    ("cert", "key", "names"),
    [
        pytest.param("plain-text", "good.key", {"plain-text"}, id="cert-not-pem"),
        pytest.param("empty", "good.key", {"empty"}, id="cert-empty"),
        pytest.param("good.key", "good.key", {"good.key"}, id="cert-is-a-key"),
        pytest.param("good.crt", "plain-text", {"plain-text"}, id="key-not-pem"),
        pytest.param("good.crt", "good.crt", {"good.crt"}, id="key-is-a-certificate"),
        pytest.param("good.crt", "other.key", {"other.key"}, id="key-does-not-match-the-certificate"),
        pytest.param("weak.crt", "weak.key", {"weak.crt"}, id="certificate-key-too-small"),
        pytest.param("not-mounted", "good.key", set(), id="file-not-mounted-blames-no-secret"),
        pytest.param("good.crt", "good.key", set(), id="good-pair"),
    ],
)
def test_unusable_secret_names_come_from_real_nginx_messages(
    cert: str, key: str, names: set[str], secrets_dir: Path, tmp_path: Path
) -> None:
    message = nginx_t_in_proxy(tls_config(cert, key), secrets_dir, tmp_path)
    assert unusable_secret_names(message) == names, message
    with_timestamps = message.replace("nginx: [emerg] ", "2026/11/26 14:10:31 [emerg] 12913#12913: ")
    assert unusable_secret_names(with_timestamps) == names


def test_messages_that_name_no_secret_file_blame_no_secret() -> None:
    assert unusable_secret_names('unknown directive "bogus" in /etc/nginx/nginx.conf:3') == frozenset()
    assert unusable_secret_names('cannot load certificate "/etc/ssl/x.pem": PEM_read_bio_X509_AUX() failed') \
        == frozenset()


def test_a_proxys_rejection_sets_the_service_aside_and_the_next_config_loads(secrets_dir: Path,
                                                                              tmp_path: Path) -> None:
    # `bad` names the proxy token's twin: a secret that exists, is not swarmgate's, and is no certificate.
    not_pem = swarm_secret("not-pem")
    (secrets_dir / "not-pem").write_text("password=hunter2\n")
    good_crt, good_key = swarm_secret("good.crt"), swarm_secret("good.key")
    tls_good = service("tls-good", {**lb("tls.local"), "com.docker.lb.ssl_cert": "good.crt",
                                    "com.docker.lb.ssl_key": "good.key"}, created_at=OLD)
    bad = service("bad", lb(ssl_cert="not-pem", ssl_key="good.key"), created_at=NEW)
    observed = ObservedState.from_api(services=[GOOD, tls_good, bad], tasks=[GOOD_TASK], nodes=NODES,
                                      secrets=[not_pem, good_crt, good_key])
    first = build_route_table(observed, EXT)
    assert first.set_aside == ()
    message = nginx_t_in_proxy(render_nginx(EXT, first, server_info=INFO).text, secrets_dir, tmp_path)
    assert 'cannot load certificate "/run/secrets/not-pem"' in message
    # What the proxy service's spec mounts, as Swarm stores it (with IDs).
    proxy_spec = {"TaskTemplate": {"ContainerSpec": {"Secrets": [
        {"File": {"Name": f"{SECRETS_DIR}{s['Spec']['Name']}"}, "SecretName": s["Spec"]["Name"], "SecretID": s["ID"]}
        for s in (not_pem, good_crt, good_key)]}}}
    assert unusable_secret_ids(message, proxy_spec) == {not_pem["ID"]}
    second = build_route_table(observed, EXT, unusable_secrets=unusable_secret_ids(message, proxy_spec))
    assert [(s.service, s.kind) for s in second.set_aside] == [("bad", "unusable_secret")]
    assert [h.host for h in second.hosts] == ["good.local", "tls.local"]
    assert nginx_t_in_proxy(render_nginx(EXT, second, server_info=INFO).text, secrets_dir, tmp_path) == ""


def test_a_secret_the_proxy_does_not_mount_is_never_blamed() -> None:
    message = 'nginx: [emerg] cannot load certificate "/run/secrets/x.crt": PEM_read_bio_X509_AUX() failed'
    assert unusable_secret_ids(message, {"TaskTemplate": {"ContainerSpec": {"Secrets": []}}}) == frozenset()
    spec = {"TaskTemplate": {"ContainerSpec": {"Secrets": [
        {"File": {"Name": "/run/secrets/x.crt"}, "SecretName": "x.crt", "SecretID": "id-x"}]}}}
    assert unusable_secret_ids(message, spec) == {"id-x"}
    assert mounted_secret_ids(spec) == {"x.crt": "id-x"}


def test_unusable_ids_of_removed_secrets_are_forgotten() -> None:
    observed = ObservedState.from_api(services=[], tasks=[], nodes=[], secrets=SECRETS)
    assert still_present({BROKEN_ID, "gone-secret-id"}, observed.secrets) == {BROKEN_ID}

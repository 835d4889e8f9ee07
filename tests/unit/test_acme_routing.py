"""`swarmgate.acme=true` in the route table and the rendered config: which services are set aside,
which secret a host serves, and the stateless HTTP-01 answer in a real nginx on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from swarmgate.models.routing.acme_hosts import AcmeRouting, issuable
from swarmgate.models.routing.labels import REASON_KINDS, ServiceRouting, SetAside, parse_service_labels
from swarmgate.models.routing.route_types import TLSFiles
from swarmgate.models.routing.routes import RouteTable, build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning import acme_account
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary
from tests.factories import node, service, task

INFO = "swarmgate/0.1.0 linux/amd64"
THUMB = acme_account.thumbprint(acme_account.account_key(b"k" * 32, "https://ca.example/dir"))


def lb(hosts: str, **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


ACME = {"swarmgate.acme": "true"}


def table(labels: dict[str, dict[str, str]], acme: AcmeRouting) -> RouteTable:
    observed = ObservedState.from_api(services=[service(n, ls) for n, ls in labels.items()],
                                      tasks=[task(service(n, ls), "wrk-0", ports={8080: 30000 + i})
                                             for i, (n, ls) in enumerate(labels.items())],
                                      nodes=[node("wrk-0", "10.0.0.5")])
    return build_route_table(observed, Extension(name="default"), acme=acme)


def test_the_label_is_typed_and_contradicting_tls_labels_set_the_service_aside() -> None:
    parsed = parse_service_labels("web", {**lb("a.example.com"), **ACME})
    assert isinstance(parsed, ServiceRouting) and parsed.acme
    assert "acme" in REASON_KINDS
    bad = parse_service_labels("web", {**lb("a.example.com"), "swarmgate.acme": "yes please"})
    assert isinstance(bad, SetAside) and bad.kind == "acme"
    for other in ({"ssl_cert": "c", "ssl_key": "k"}, {"ssl_passthrough": "true"}):
        aside = parse_service_labels("web", {**lb("a.example.com", **other), **ACME})
        assert isinstance(aside, SetAside) and aside.kind == "acme" and "keep one of the two" in aside.reason
    # ssl_only with ACME waits for the first certificate instead of being refused.
    assert isinstance(parse_service_labels("web", {**lb("a.example.com", ssl_only="true"), **ACME}), ServiceRouting)


def test_without_a_directory_or_with_an_unprovable_host_only_that_service_is_set_aside() -> None:
    labels = {"acme": {**lb("a.example.com"), **ACME}, "plain": lb("p.example.com"),
              "wild": {**lb("b.example.com,10.1.2.3"), **ACME}}
    off = table(labels, AcmeRouting())
    assert [(s.service, s.kind) for s in off.set_aside] == [("acme", "acme"), ("wild", "acme")]
    assert "no ACMEDirectory configured" in off.set_aside[0].reason
    on = table(labels, AcmeRouting(configured=True))
    assert [(s.service, s.kind) for s in on.set_aside] == [("wild", "acme")]
    assert "10.1.2.3" in on.set_aside[0].reason
    assert {h.host for h in on.hosts} == {"a.example.com", "p.example.com"}
    assert not issuable("10.1.2.3") and issuable("a.example.com")


def test_a_host_serves_its_issued_secret_as_cert_and_key_and_http_only_before_the_first() -> None:
    labels = {"web": {**lb("a.example.com,b.example.com", ssl_only="true"), **ACME}}
    before = table(labels, AcmeRouting(configured=True))
    assert [(h.host, h.tls, h.ssl_only) for h in before.hosts] == [("a.example.com", None, False),
                                                                   ("b.example.com", None, False)]
    assert any("ssl_only waits for the host's first ACME certificate" in n for n in before.notices)
    after = table(labels, AcmeRouting(configured=True, certs={"a.example.com": "swarmgate-acme-a-0123"}))
    a, b = after.hosts
    assert (a.tls, a.ssl_only) == (TLSFiles("swarmgate-acme-a-0123", "swarmgate-acme-a-0123"), True)
    assert (b.tls, b.ssl_only) == (None, False)
    assert after.secrets == ("swarmgate-acme-a-0123",)


def test_the_challenge_location_is_rendered_only_with_a_thumbprint() -> None:
    t = table({"web": {**lb("a.example.com"), **ACME}}, AcmeRouting(configured=True))
    ext = Extension(name="default")
    assert "acme-challenge/ {" not in render_nginx(ext, t, server_info=INFO).text
    text = render_nginx(ext, t, server_info=INFO, acme_thumbprint=THUMB).text
    assert text.count("location ^~ /.well-known/acme-challenge/ {") == 2  # the default and the shared server
    assert f'return 200 "$swarmgate_acme_token.{THUMB}";' in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = nginx_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs nginx and openssl")
    tmp = tmp_path_factory.mktemp("acme-loopback")
    cert, key = tmp / "c.crt", tmp / "c.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=own.example.com", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    (tmp / "own-cert.pem").write_text(cert.read_text() + key.read_text())
    port, tls_port = free_port(), free_port()
    ext = Extension(name="default", publish_mode="host", hitless_service_update=False, target_port=port,
                    published_port=port, target_ssl_port=tls_port, published_ssl_port=tls_port)
    labels = {"shared": {**lb("shared.example.com"), **ACME},
              "own": {**lb("own.example.com", ssl_only="true", context_root="/app"), **ACME}}
    t = table(labels, AcmeRouting(configured=True, certs={"own.example.com": "own-cert.pem"}))
    text = render_nginx(ext, t, server_info=INFO, acme_thumbprint=THUMB,
                        tls_paths={"own-cert.pem": str(tmp / "own-cert.pem")}).text
    prefix = tmp / "nginx"
    prefix.mkdir()
    local = localized(text, prefix, None)
    for p in (port, tls_port):
        local = local.replace(f"listen {p}", f"listen 127.0.0.1:{p}")
    (prefix / "nginx.conf").write_text(local)
    nginx = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr",
                              "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert nginx.poll() is None, nginx.communicate()[1]
                assert time.monotonic() < deadline
                time.sleep(0.05)
        yield port
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)


def get(port: int, host: str, path: str) -> tuple[str, str, str]:
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-H", f"Host: {host}", "-o", "-", "-w",
                          "\n%{http_code} %{content_type}", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, timeout=20, check=True).stdout.decode()
    body, _, tail = out.rpartition("\n")
    code, _, kind = tail.partition(" ")
    return code, kind, body


@pytest.mark.parametrize("host", ["shared.example.com", "own.example.com", "unknown.example.com"])
def test_every_port_80_server_answers_a_challenge_with_the_token_and_thumbprint(http_port: int, host: str) -> None:
    code, kind, body = get(http_port, host, "/.well-known/acme-challenge/tok_EN-123")
    assert (code, kind, body) == ("200", "text/plain", acme_account.key_authorization("tok_EN-123", THUMB))
    # Anything else under the prefix is not answered, and the rest of the host keeps its route.
    assert get(http_port, host, "/.well-known/acme-challenge/a.b")[0] == "404"
    assert get(http_port, host, "/.well-known/acme-challenge/x/y")[0] == "404"


def test_ssl_only_still_redirects_everything_but_the_challenge(http_port: int) -> None:
    assert get(http_port, "own.example.com", "/app/x")[0] == "301"

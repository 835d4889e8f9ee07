"""The status page against `/v1/status` documents built the way the operator builds them
(tests/status_documents.py): what each section shows, filters and pages, the 503 explanation, the
standby and Docker-unreachable banners, the Grafana links, valid markup without broken links, and
nothing on the page that is not in the document (no secret, key or token)."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest

from swarmgate.errors import ConfigError
from swarmgate.models.settings.config import parse_config
from swarmgate.operator.control.endpoint import HTML_POLICY, serve
from swarmgate.operator.control.loop import DockerHealth
from swarmgate.operator.control.readiness import Readiness
from swarmgate.operator.delivery.status_page import render_status_page
from swarmgate.operator.delivery.status_view import PAGE_SIZE, label_to_fix, parse_query, traffic_cells
from swarmgate.operator.telemetry.holds import HoldReport
from tests import html_check
from tests import status_documents as docs

DASHBOARD = "https://grafana.example.com/d/swarmgate/swarmgate?orgId=1"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return docs.status(rejected="0" * 64)


def page(document: dict[str, Any], **params: str) -> str:
    return render_status_page(document, params, dashboard_url=DASHBOARD)


def test_routes_show_host_path_services_upstreams_and_tls(document: dict[str, Any]) -> None:
    assert html_check.rows(page(document), "routes") == [
        ["Host", "Path", "Services", "Upstreams", "Settings", "TLS", "Certificate expires", "Requests/s", "5xx", "p99",
         "Dashboard"],
        ["demo.local", "/", "demo", "198.18.0.20:30001", "-", "-", "-", "42", "1.2 %", "88 ms", "Grafana"],
        ["idle.local", "/", "idle", "no running task: 503", "-", "-", "-", "0", "-", "-", "Grafana"],
        ["secure.local", "/", "secure", "198.18.0.20:30002", "-", "secret secure.crt",
         "not read (the operator never reads a secret's data)", "0", "-", "-", "Grafana"],
    ]


@pytest.mark.parametrize(("traffic", "cells"), [
    (None, ("-", "-", "-", False)),
    ({"requests_per_second": 0.0, "ratio_5xx": None, "p99_seconds": None}, ("0", "-", "-", False)),
    ({"requests_per_second": 0.25, "ratio_5xx": 0.0, "p99_seconds": 0.0049}, ("0.25", "0.0 %", "5 ms", False)),
    ({"requests_per_second": 1500.4, "ratio_5xx": 0.5, "p99_seconds": 2.5}, ("1500", "50.0 %", "2.50 s", True)),
], ids=["not-measured", "no-requests", "slow-and-healthy", "busy-and-failing"])
def test_traffic_columns_say_rate_5xx_share_and_p99_in_words(traffic: dict[str, Any] | None,
                                                             cells: tuple[str, str, str, bool]) -> None:
    shown = traffic_cells(traffic)
    assert (shown["rate"], shown["errors"], shown["p99"], shown["failing"]) == cells


def test_a_standby_shows_no_traffic() -> None:
    rows = html_check.rows(page(docs.status(role="standby")), "routes")
    assert {tuple(r[7:10]) for r in rows[1:]} == {("-", "-", "-")}


def test_set_aside_service_shows_its_reason_its_503_host_and_the_label_to_fix(document: dict[str, Any]) -> None:
    assert html_check.rows(page(document), "set-aside") == [
        ["Service", "Hosts it asks for", "Why", "Label to fix"],
        ["shop (default)", "shop.example.com 503", "label com.docker.lb.port: expected an integer 1-65535, got 'http'",
         "com.docker.lb.port"],
    ]


def test_a_host_no_route_serves_is_explained_as_a_503(document: dict[str, Any]) -> None:
    text = html_check.text(page(document, host="shop.example.com"))
    assert "No route serves shop.example.com: every proxy answers it with 503." in text
    assert "The services set aside below ask for it" in text
    assert "0 of 3 routes" in text
    assert "No route serves" not in html_check.text(page(document, host="demo.local"))


def test_notices_and_configuration_notices(document: dict[str, Any]) -> None:
    text = html_check.text(page(document))
    assert "default: service demo: label 'com.docker.lb.hots' is not known to swarmgate" in text
    operator = dict(r for r in html_check.rows(page(document), "operator") if len(r) == 2)
    assert operator["Configuration notices"] == ("Extensions.default.Image: not needed by swarmgate "
                                                 "(no separate extension service); ignored")


def test_proxies_show_task_node_digest_current_reload_and_nginx_message(document: dict[str, Any]) -> None:
    digest = document["clusters"]["default"]["digest"]
    text = html_check.text(page(document))
    assert f"Extension default: configuration {digest[:12]}, every proxy current" in text
    assert html_check.rows(page(document), "proxies") == [
        ["Task", "Node", "Serves", "Current", "Last reload", "Last heard", "Rejected, with nginx's message"],
        ["proxytask00000000000000001", "lb-00", digest[:12], "yes", "2026-12-07 12:00:00 UTC",
         "2026-12-07 12:00:00 UTC", "-"],
        ["proxytask00000000000000002", "lb-01", digest[:12], "yes", "2026-12-07 12:00:00 UTC",
         "2026-12-07 12:00:00 UTC",
         "000000000000: nginx: [emerg] unknown directive \"bogus\" in /etc/nginx/nginx.conf:12"],
    ]


def test_operator_section(document: dict[str, Any]) -> None:
    operator = dict(r for r in html_check.rows(page(document), "operator") if len(r) == 2)
    assert {k: operator[k] for k in ("This operator", "Leader", "Standbys", "Ready", "Docker",
                                     "Last successful pass", "Holds")} == {
        "This operator": "operator-0: leader (holds the lease)", "Leader": "no leader yet: no lease",
        "Standbys": "none seen", "Ready": "yes", "Docker": "reachable",
        "Last successful pass": "2026-12-07 12:00:00 UTC", "Holds": "none"}


def test_a_standby_with_docker_unreachable_says_both() -> None:
    text = html_check.text(page(docs.status(role="standby", docker_reachable=False)))
    assert "This operator is a standby: it writes nothing and pushes to no proxy" in text
    assert ("Docker is unreachable: the routes and findings below are those of the last successful pass "
            "(2026-12-07 12:00:00 UTC)") in text
    assert "standby" not in html_check.text(page(docs.status()))


@pytest.mark.parametrize(("params", "hosts"), [
    pytest.param({"host": "DEMO"}, ["demo.local"], id="host-substring-any-case"),
    pytest.param({"service": "sec"}, ["secure.local"], id="service-substring"),
    pytest.param({"host": "local", "service": "idle"}, ["idle.local"], id="both"),
    pytest.param({"host": "nothing.here"}, [], id="no-match"),
])
def test_filters_by_host_or_service(document: dict[str, Any], params: dict[str, str], hosts: list[str]) -> None:
    assert [r[0] for r in html_check.rows(page(document, **params), "routes")[1:]] == hosts


def test_pages_of_routes_link_to_each_other() -> None:
    big = docs.status(extra=2 * PAGE_SIZE + 5)
    first, last = page(big, host="example.test"), page(big, host="example.test", page="3")
    assert len(html_check.rows(first, "routes")) == PAGE_SIZE + 1
    assert len(html_check.rows(last, "routes")) == 5 + 1
    assert "205 of 208 routes, page 1 of 3" in html_check.text(first)
    assert 'href="?host=example.test&amp;page=2">next page' in first
    assert 'href="?host=example.test&amp;page=2">previous page' in last
    assert "page 3 of 3" in html_check.text(page(big, host="example.test", page="99"))


@pytest.mark.parametrize(("raw", "expected"), [
    ({}, ("", "", 1)), ({"page": "x"}, ("", "", 1)), ({"page": "0"}, ("", "", 1)), ({"page": "-2"}, ("", "", 1)),
    ({"host": " Shop.Example.COM ", "service": " Web ", "page": "2"}, ("shop.example.com", "Web", 2)),
    ({"host": "a" * 1000}, ("a" * 253, "", 1)),
], ids=["none", "word", "zero", "negative", "trimmed", "bounded"])
def test_query_parameters_are_read_leniently(raw: dict[str, str], expected: tuple[str, str, int]) -> None:
    query = parse_query(raw)
    assert (query.host, query.service, query.page) == expected


def test_grafana_link_per_route_only_when_a_dashboard_is_configured(document: dict[str, Any]) -> None:
    links = html_check.read(page(document)).links
    assert f"{DASHBOARD}&var-extension=default&var-host=demo.local" in links
    plain = render_status_page(document, {})
    assert "Grafana" not in plain and "Dashboard" not in plain


@pytest.mark.parametrize("params", [{}, {"host": "shop.example.com"}, {"service": "x"}],
                         ids=["all", "unrouted-host", "no-match"])
def test_markup_is_valid_and_no_link_is_broken(document: dict[str, Any], params: dict[str, str]) -> None:
    assert html_check.problems(page(document, **params), dashboard=DASHBOARD) == []
    standby = render_status_page(docs.status(role="standby", docker_reachable=False), params)
    assert html_check.problems(standby) == []


def test_values_are_text_never_markup() -> None:
    hostile = docs.status()
    hostile["notices"]["default"] = ["label 'com.docker.lb.x<script>alert(1)</script>' is not known"]
    rendered = page(hostile)
    assert "<script>" not in rendered and "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered


def test_the_page_shows_no_value_the_document_does_not_hold(document: dict[str, Any]) -> None:
    """Every data cell (monospace: names, addresses, digests) is in the document, and what was
    planted where only a leak would find it (an environment variable, a non-routing label) is on
    neither."""
    serialized = json.dumps(document)
    assert docs.PLANTED not in serialized
    rendered = page(document, host="")
    assert docs.PLANTED not in rendered
    values = re.findall(r'class="mono">([^<]+)<', rendered)
    assert values
    for value in values:
        for word in value.replace(",", " ").split():
            assert word in serialized, f"{word!r} is on the page but not in /v1/status"


@pytest.mark.parametrize(("kind", "fix"), [
    ("port", "com.docker.lb.port"), ("hsts", "swarmgate.hsts"),
    ("no_host_port", "publish com.docker.lb.port's target port in host mode (--publish mode=host,target=PORT)"),
    ("other", "-"),
])
def test_label_to_fix_per_reason_kind(kind: str, fix: str) -> None:
    assert label_to_fix(kind) == fix


def test_endpoint_serves_the_page_with_its_query_and_policy(document: dict[str, Any]) -> None:
    seen: list[dict[str, str]] = []

    def status_page(query: dict[str, str]) -> tuple[int, str, bytes]:
        seen.append(query)
        return 200, "text/html; charset=utf-8", page(document, **query).encode()

    server = serve("127.0.0.1:0", {}, {"/": status_page})
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/?host=demo.local&host=x&page=1") as r:
            body = r.read().decode()
            assert r.headers["Content-Security-Policy"] == HTML_POLICY
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert seen == [{"host": "demo.local", "page": "1"}]
        assert [row[0] for row in html_check.rows(body, "routes")[1:]] == ["demo.local"]
    finally:
        server.shutdown()


@pytest.mark.parametrize(("extra", "message"), [
    ('StatusPageAddr = "127.0.0.1:8080"', "StatusPageAddr: '127.0.0.1:8080' has ListenAddr's port"),
    ('GrafanaDashboardURL = "https://admin:pw@grafana.example.com/d/x"', "GrafanaDashboardURL: expected a dashboard's"),
    ('GrafanaDashboardURL = "javascript:alert(1)"', "GrafanaDashboardURL: expected a dashboard's"),
    ('StatusPage = "no"', "StatusPage"),
], ids=["same-port", "credentials", "not-http", "not-bool"])
def test_status_page_keys_refuse_bad_values(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(f'ListenAddr = ":8080"\n{extra}\n[Extensions.default]\n', source="c.toml")


def test_status_page_keys_are_read() -> None:
    config = parse_config('StatusPage = false\nStatusPageAddr = "127.0.0.1:8081"\n'
                          f'GrafanaDashboardURL = "{DASHBOARD}"\n[Extensions.default]\n', source="c.toml")
    assert (config.status_page, config.status_page_addr, config.grafana_dashboard_url) == (
        False, "127.0.0.1:8081", DASHBOARD)


def test_readiness_document_says_what_the_operator_knows_now() -> None:
    health = DockerHealth()
    readiness = Readiness(health, HoldReport(), max_age=30.0)
    assert readiness.document() == {"ready": False, "docker_reachable": None, "last_pass": None, "holds": []}
    health.ok()
    assert readiness.document()["ready"] is True
    health.failed("docker unreachable: ConnectionError")
    document = readiness.document()
    assert (document["ready"], document["docker_reachable"]) == (False, False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", document["last_pass"])

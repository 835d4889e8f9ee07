"""Observability on a real Swarm, scraped by a real Prometheus.

One operator run (host process, JSON logs) and one Prometheus (Debian's package, 1 s scrapes of the
operator through `manifests/prometheus.yml`) serve the whole module: a demo service is created and
scaled 1→3→1 next to a service whose labels set it aside; then every PromQL expression of every
panel of `manifests/grafana-dashboard.json` must return data (but the ACME row's, which needs
certificates: tests/lab/test_acme.py evaluates those), and the channel key's secret parts must appear in
no log line, no metric and no `swarmgate plan` output.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import docker
import pytest

from swarmgate.operator.delivery.channel_key import ChannelKey
from tests import docker_api
from tests.lab import http
from tests.lab.cluster import REPO, Lab
from tests.lab.operator_fixture import (
    CHANNEL_SECRET,
    PROXY,
    RunningOperator,
    clean_swarm,
    create_routed,
)
from tests.support import free_port, wait_for

pytestmark = pytest.mark.lab

DASHBOARD = REPO / "manifests" / "grafana-dashboard.json"
SCRAPE_CONFIG = REPO / "manifests" / "prometheus.yml"
ALERT_RULES = REPO / "manifests" / "prometheus-alerts.yml"
PROMETHEUS = "/usr/bin/prometheus"
# What Grafana would put in place of its variables when the dashboard is opened.
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "1s", "$__range": "5m", "$extension": ".*",
                "$host": ".*"}
DEMO_LABELS = {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"}
BROKEN_LABELS = {"com.docker.lb.hosts": "broken.local"}  # no port label: set aside, reason kind "port"
SERVICES = ("demo", "broken")


class JsonLogOperator(RunningOperator):
    """The lead's host-process operator, logging JSON (`--log-format json`) to its log file."""

    def start(self, *, env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "swarmgate"), "-D", "--log-format", "json", "run",
             "-c", str(self.config_path)],
            stdout=log, stderr=log, env={**os.environ, **(env or {})})
        wait_for(self._healthy, timeout=15, what="operator /healthz")


@dataclass
class Prometheus:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        r = http.get("127.0.0.1", f"{path}?{urllib.parse.urlencode(params)}", port=self.port, timeout=10)
        doc = json.loads(r.body)
        assert r.status == 200 and doc["status"] == "success", (path, params, r.status, r.body[:300])
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


@contextmanager
def prometheus(workdir: Path, target: str) -> Iterator[Prometheus]:
    """Prometheus scraping `target` every second with the manifest's job; killed by its pid after."""
    text = SCRAPE_CONFIG.read_text()
    text = re.sub(r"(scrape|evaluation)_interval: \S+", r"\1_interval: 1s", text)
    text, n = re.subn(r'targets: \["[^"]*"\]', f'targets: ["{target}"]', text)
    assert n == 1, "manifests/prometheus.yml should name one static target"
    config = workdir / "prometheus.yml"
    config.write_text(text)
    shutil.copy(ALERT_RULES, workdir / ALERT_RULES.name)  # the config names it beside itself
    port = free_port("127.0.0.1")
    log_path = workdir / "prometheus.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    prom = Prometheus(port, proc, log_path)
    try:
        wait_for(lambda: proc.poll() is None and http.get("127.0.0.1", "/-/ready", port=port).status == 200,
                 timeout=30, what="prometheus ready")
        yield prom
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Run:
    lab: Lab
    op: JsonLogOperator
    prom: Prometheus
    client: docker.DockerClient
    figures: dict[str, Any]
    traffic: Traffic


def scraped(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def run(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    workdir = tmp_path_factory.mktemp("observability")
    client = lab.manager_client()
    clean_swarm(client, services=SERVICES, lab=lab)
    op = JsonLogOperator(lab, workdir)
    figures: dict[str, Any] = {}
    try:
        op.start()
        with prometheus(workdir, op.listen) as prom:
            started = time.monotonic()
            wait_for(lambda: scraped(prom, 'up{job="swarmgate"}') == 1, timeout=30, what="first scrape")
            demo = create_routed(client, "demo", DEMO_LABELS)
            create_routed(client, "broken", BROKEN_LABELS)
            for step, replicas in enumerate((1, 3, 1)):
                docker_api.scale(client, demo, replicas)
                wait_for(partial(scraped,
                                 prom, f'swarmgate_upstreams{{extension="default"}} == {replicas}'
                                       ' and on() sum(swarmgate_proxies_not_current) == 0'
                                       ' and on() sum(swarmgate_proxy_config_current) > 0'),
                         timeout=90, what=f"prometheus to see {replicas} upstream(s), every proxy current")
                figures[f"step {step}: {replicas} upstream(s) seen, s"] = round(time.monotonic() - started, 1)
            try:
                traffic = traffic_through_both_lb_nodes(lab, prom, figures)
            except TimeoutError:
                print("\n".join(line for line in op.log_text().splitlines() if "traffic" in line)[-3000:])
                raise
            time.sleep(3)  # a few more scrapes of the settled state
            yield Run(lab, op, prom, client, figures, traffic)
    finally:
        op.stop()
        clean_swarm(client, services=SERVICES, lab=lab)
        client.close()


# A load of known size and status mix, sent to each LB node: (host, path asked, expected status) →
# requests. The route table names them: demo.local's only route is its host and `/` (service demo,
# which answers 404 for a path it does not know); a host no route serves is the default server's
# (host and path `-`), answered 503 by nginx itself (service `-`).
UNKNOWN_HOST = "nobody.local"
LOAD = {("demo.local", "/ping", 200): 40, ("demo.local", "/missing", 404): 15, (UNKNOWN_HOST, "/", 503): 20}
SERIES = {("demo.local", "/ping", 200): ("demo.local", "/", "demo", "2xx"),
          ("demo.local", "/missing", 404): ("demo.local", "/", "demo", "4xx"),
          (UNKNOWN_HOST, "/", 503): ("-", "-", "-", "5xx")}
BY = "host, path, service, code, proxy"


@dataclass
class Traffic:
    before: dict[tuple[str, ...], float]  # (host, path, service, code, proxy) → requests, before the load
    after: dict[tuple[str, ...], float]


def request_counts(prom: Prometheus) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(k, "") for k in BY.split(", ")): float(r["value"][1])
            for r in prom.query(f"sum by ({BY}) (swarmgate_route_requests_total)")}


def send(lab: Lab, times: int = 1) -> None:
    """Each kind of request `times` times its LOAD share (times=0: one of each) through every LB node."""
    for node in lab.lb_nodes:
        for (host, path, status), count in LOAD.items():
            for _ in range(count * times or 1):
                got = http.get(lab.address(node), path, host=host).status
                assert got == status, (node, host, path, got)


def settled_counts(prom: Prometheus, want: int) -> dict[tuple[str, ...], float] | None:
    """Prometheus's request counts once every series of the load is seen on `want` proxy tasks each
    and two reads 4 s apart agree (the agent's write, the operator's read and a scrape have passed)."""
    first = request_counts(prom)
    if sum(1 for k in first if k[:4] in SERIES.values()) < len(SERIES) * want:  # each series on each proxy
        return None
    time.sleep(4)
    return first if request_counts(prom) == first else None


def traffic_through_both_lb_nodes(lab: Lab, prom: Prometheus, figures: dict[str, Any]) -> Traffic:
    """One request of each kind (so every series exists before the baseline), the baseline, the load,
    then the counts Prometheus scraped once they settle."""
    send(lab, times=0)
    proxies = len(lab.lb_nodes)
    before = wait_for(partial(settled_counts, prom, proxies), timeout=60,
                      what=lambda: f"the warm-up's counts in prometheus: {request_counts(prom)}")
    started = time.monotonic()
    send(lab)
    figures["load: requests sent"] = sum(LOAD.values()) * proxies
    figures["load: seconds to send"] = round(time.monotonic() - started, 1)
    expected = {k: before.get(k, 0) + LOAD[kind] for kind, series in SERIES.items()
                for k in before if k[:4] == series}
    wait_for(lambda: all(request_counts(prom).get(k) == v for k, v in expected.items()), timeout=60,
             what=lambda: f"prometheus to count the load: want {expected}, have {request_counts(prom)}")
    figures["load: seconds until prometheus counted it"] = round(time.monotonic() - started, 1)
    after = wait_for(partial(settled_counts, prom, proxies), timeout=30, what="the load's counts to settle")
    return Traffic(before, after)


# The dashboard's ACME row needs certificates and orders: tests/lab/test_acme.py evaluates it.
ACME_ROW = "ACME"


def dashboard_queries(*, row: str | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel: those under the row titled `row`, or (None) all but
    the ACME row's."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    current = ""
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            current = panel["title"]
        if (current != row) if row is not None else (current == ACME_ROW):
            continue
        for nested in [panel, *panel.get("panels", [])]:
            for target in nested.get("targets", []):
                out.append((nested["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def test_dashboard_has_panels_for_everything_the_issue_names() -> None:
    exprs = " ".join(e for _, e in dashboard_queries() + dashboard_queries(row=ACME_ROW))
    for metric in ("swarmgate_convergence_seconds_bucket", "swarmgate_reconcile_total", "swarmgate_routes",
                   "swarmgate_upstreams", "swarmgate_services_set_aside", "swarmgate_proxies_not_current",
                   "swarmgate_proxy_reloads_total", "swarmgate_certificate_expiry_timestamp_seconds",
                   "swarmgate_acme_orders_total", "swarmgate_acme_consecutive_failures",
                   "swarmgate_route_requests_total", "swarmgate_route_request_duration_seconds_bucket",
                   "swarmgate_route_upstream_duration_seconds_bucket"):
        assert metric in exprs, metric


def test_every_dashboard_panel_returns_data_from_prometheus(run: Run) -> None:
    dead, nan_only = [], []
    for title, expr in dashboard_queries():
        result = run.prom.query(substitute(expr))
        if not result:
            dead.append((title, expr))
        elif all(math.isnan(float(r["value"][1])) for r in result):
            nan_only.append((title, expr))
    assert dead == [], f"panels without data: {dead}"
    assert nan_only == [], f"panels with only NaN: {nan_only}"
    # The extension variable's values come from the same Prometheus.
    assert run.prom.api("/api/v1/label/extension/values", **{"match[]": "swarmgate_routes"}) == ["default"]


def test_metrics_tell_what_happened(run: Run) -> None:
    prom = run.prom
    assert scraped(prom, 'swarmgate_routes{extension="default"}') == 1  # demo.local; broken.local is set aside
    assert scraped(prom, 'swarmgate_services_set_aside{extension="default",reason="port"}') == 1
    assert scraped(prom, 'max_over_time(swarmgate_upstreams{extension="default"}[5m])') == 3
    reloads = scraped(prom, 'sum(swarmgate_proxy_reloads_total{result="ok"})') or 0
    assert reloads >= 2 * len(run.lab.lb_nodes)  # every proxy reloaded at least for 1 → 3 and 3 → 1
    count = scraped(prom, 'sum(swarmgate_convergence_seconds_count{extension="default"})') or 0
    assert count >= 3
    p50 = scraped(prom, 'histogram_quantile(0.5, sum by (le) (swarmgate_convergence_seconds_bucket))')
    mean = scraped(prom, 'sum(swarmgate_convergence_seconds_sum) / sum(swarmgate_convergence_seconds_count)')
    proxies = prom.query('swarmgate_proxy_config_current{extension="default"}')
    assert len(proxies) == len(run.lab.lb_nodes)
    assert {p["metric"]["node"] for p in proxies} == set(run.lab.lb_nodes)
    run.figures.update({"convergence observations": count, "convergence p50 s": p50, "convergence mean s": mean,
                        "reloads ok": reloads})
    print(json.dumps(run.figures))


def test_route_request_counters_grew_by_exactly_the_load_through_both_lb_nodes(run: Run) -> None:
    before, after = run.traffic.before, run.traffic.after
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    proxies = {k[4] for k in after}
    running = {r["metric"]["task"] for r in run.prom.query("swarmgate_proxy_config_current")}
    assert proxies == running and len(proxies) == len(run.lab.lb_nodes)
    assert {k: v for k, v in grew.items() if v} == {
        (*series, proxy): LOAD[kind] for kind, series in SERIES.items() for proxy in proxies}
    # The histograms counted the same requests, and demo's upstream time only its own.
    durations = {(r["metric"]["host"], r["metric"]["service"]): float(r["value"][1]) for r in run.prom.query(
        "sum by (host, service) (swarmgate_route_request_duration_seconds_count)")}
    totals = {(k[0], k[2]): 0.0 for k in after}
    for k, v in after.items():
        totals[(k[0], k[2])] += v
    assert durations == totals
    upstream = {r["metric"]["host"] for r in run.prom.query("swarmgate_route_upstream_duration_seconds_count")}
    assert upstream == {"demo.local"}
    run.figures["load: requests counted"] = sum(v for v in grew.values())


def test_the_5xx_ratio_alert_rule_evaluates_and_picks_the_failing_route(run: Run) -> None:
    def pending() -> list[dict[str, Any]] | None:
        alerts = run.prom.query('ALERTS{alertname="SwarmgateRoute5xxRatioHigh"}')
        return alerts or None

    alerts = wait_for(pending, timeout=15, what="the 5xx ratio alert to be pending")
    assert [(a["metric"]["host"], a["metric"]["path"], a["metric"]["alertstate"]) for a in alerts] == [
        ("-", "-", "pending")]  # every request for the unknown host failed; demo.local's 404s are not 5xx
    rules = [r for g in run.prom.api("/api/v1/rules")["groups"] for r in g["rules"]
             if r["name"] == "SwarmgateRoute5xxRatioHigh"]
    assert [(r["health"], r.get("lastError", "")) for r in rules] == [("ok", "")]


def test_status_gives_each_route_its_traffic(run: Run) -> None:
    routes = {r["host"]: r for r in run.op.status()["routes"]}
    traffic = routes["demo.local"]["traffic"]
    assert traffic is not None and set(traffic) == {"requests_per_second", "ratio_5xx", "p99_seconds"}


def test_health_and_readiness(run: Run) -> None:
    host, port = run.op.listen.rsplit(":", 1)
    assert http.get(host, "/healthz", port=int(port)).status == 200
    assert http.get(host, "/readyz", port=int(port)).status == 200


def proxy_key_secrets(lab: Lab) -> list[str]:
    """The channel key's secret parts as a proxy sees them (read inside a proxy container on an LB
    node's engine): the HMAC key in hex and every line of the private key's PEM body."""
    engine = lab.client(lab.lb_nodes[0])
    try:
        containers = engine.containers.list(
            ignore_removed=True, filters={"label": f"com.docker.swarm.service.name={PROXY}"})
        assert containers, "no proxy container on the first LB node"
        code, out = containers[0].exec_run(["cat", f"/run/secrets/{CHANNEL_SECRET}"])
        assert code == 0 and isinstance(out, bytes), out  # not streamed: the whole output at once
        key = ChannelKey.parse(out.decode())
        pem_lines = [line for line in key.key_pem.splitlines() if line and not line.startswith("-----")]
        assert pem_lines and len(key.hmac_key) == 32
        return [key.hmac_key.hex(), *pem_lines]
    finally:
        engine.close()


def test_no_key_material_in_logs_metrics_status_or_plan(run: Run) -> None:
    secrets = proxy_key_secrets(run.lab)
    host, port = run.op.listen.rsplit(":", 1)
    metrics_text = http.get(host, "/metrics", port=int(port)).body.decode()
    status_text = http.get(host, "/v1/status", port=int(port)).body.decode()
    plan = subprocess.run(
        [str(REPO / ".venv" / "bin" / "swarmgate"), "-D", "--log-format", "json", "plan",
         "-c", str(run.op.config_path)], capture_output=True, text=True, timeout=60)
    assert plan.returncode in (0, 1), plan.stderr
    series = json.dumps(run.prom.query('{__name__=~"swarmgate_.+"}'))
    log = run.op.log_text()
    assert "swarmgate_build_info" in metrics_text and "reconcile_id" in log and "extension default" in plan.stdout
    for where, text in {"operator log": log, "/metrics": metrics_text, "/v1/status": status_text,
                        "plan stdout": plan.stdout, "plan stderr": plan.stderr, "prometheus series": series}.items():
        for secret in secrets:
            assert secret not in text, f"channel key material appears in {where}"


def test_log_is_json_with_one_line_per_action_and_per_set_aside_service(run: Run) -> None:
    lines = [json.loads(line) for line in run.op.log_text().splitlines() if line.strip()]
    actions = [rec for rec in lines if "action" in rec and rec["level"] == "info"]
    kinds = {rec["action"] for rec in actions}
    assert {"CreateChannelSecret", "CreateService", "PublishProxyConfig"} <= kinds, kinds
    assert all(re.fullmatch(r"r\d+", rec["reconcile_id"]) for rec in actions)
    aside = [rec for rec in lines if rec.get("msg") == "service set aside"]
    assert aside and {rec["service"] for rec in aside} == {"broken"}
    assert all("reconcile_id" in rec and rec["reason"] for rec in aside)

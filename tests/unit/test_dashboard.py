"""manifests/grafana-dashboard.json: every panel's PromQL names metrics the operator declares, and
parses (promtool, each expression as a recording rule). The lab tests evaluate them against a real
Prometheus (tests/lab/test_observability.py; the ACME row in tests/lab/test_acme.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swarmgate.operator.telemetry import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "grafana-dashboard.json"
GRAFANA_VARS = {"$__rate_interval": "30s", "$__interval": "1s", "$__range": "5m", "$extension": ".*",
                "$host": ".*"}


def exprs() -> list[tuple[str, str]]:
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for nested in [panel, *panel.get("panels", [])]:
            out += [(nested["title"], t["expr"]) for t in nested.get("targets", [])]
    return out


def declared_series() -> set[str]:
    """Every series name the registry can expose, labelled families with no sample yet included."""
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "info": ("_info",)}
    names = set()
    for family in metrics.declared():
        names |= {family.name, *(family.name + s for s in suffixes.get(family.type, ()))}
    return names


def test_every_panel_names_declared_metrics_only() -> None:
    declared = declared_series()
    for title, expr in exprs():
        used = set(re.findall(r"\bswarmgate_[a-z_]+\b", expr))
        assert used and used <= declared, (title, used - declared)


def test_the_acme_row_shows_expiry_orders_failures_and_the_budget() -> None:
    text = " ".join(e for _, e in exprs())
    for metric in ("swarmgate_certificate_expiry_timestamp_seconds", "swarmgate_acme_orders_total",
                   "swarmgate_acme_consecutive_failures", "swarmgate_acme_orders_deferred"):
        assert metric in text, metric


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
def test_promtool_parses_every_panel_expression(tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(exprs()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # YAML is a superset of JSON
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_the_traffic_row_shows_top_routes_5xx_ratio_and_p99_per_route() -> None:
    panels = {p["title"]: " ".join(t["expr"] for t in p.get("targets", []))
              for p in json.loads(DASHBOARD.read_text())["panels"]}
    assert panels["Top routes by request rate"].startswith("topk(10, sum by (extension, host, path) (rate(")
    assert 'code="5xx"' in panels["5xx ratio per route"]
    assert "histogram_quantile(0.99, sum by (le, extension, host, path) (rate(swarmgate_route_request_duration" \
        in panels["p99 request time per route"]
    # The status page links each route to the dashboard with var-host: the variable exists.
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert variables["host"]["allValue"] == ".*"

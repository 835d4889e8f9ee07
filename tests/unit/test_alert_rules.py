"""manifests/prometheus-alerts.yml: valid rules (promtool), on the metrics the operator declares."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swarmgate.operator.telemetry import metrics

RULES = Path(__file__).resolve().parents[2] / "manifests" / "prometheus-alerts.yml"


def test_the_rules_name_declared_metrics_only() -> None:
    # Each rule is `- alert: NAME` followed by its `expr:` line (the file's own layout).
    exprs = dict(re.findall(r"- alert: (\w+)\n\s+expr: (.+)", RULES.read_text()))
    assert set(exprs) == {"SwarmgateCertificateExpiresSoon", "SwarmgateAcmeOrdersFailing", "SwarmgateRoute5xxRatioHigh"}
    declared = {m.name for m in metrics.declared()}
    assert "swarmgate_certificate_expiry_timestamp_seconds" in declared
    assert "swarmgate_acme_consecutive_failures" in declared
    assert "swarmgate_certificate_expiry_timestamp_seconds" in exprs["SwarmgateCertificateExpiresSoon"]
    assert "7 * 86400" in exprs["SwarmgateCertificateExpiresSoon"]
    assert "swarmgate_acme_consecutive_failures" in exprs["SwarmgateAcmeOrdersFailing"]
    assert "swarmgate_route_requests" in declared
    assert 'swarmgate_route_requests_total{code="5xx"}' in exprs["SwarmgateRoute5xxRatioHigh"]
    assert "> 0.05" in exprs["SwarmgateRoute5xxRatioHigh"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
def test_promtool_accepts_the_rules() -> None:
    checked = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()

"""A bad config never reaches the Swarm or the proxies, on the lab's real Swarm.

The operator converges with a good config under client load on every LB node; then it is replaced by
one started with a config the model accepts but nginx rejects (an `HTTPOptions` entry nginx refuses).
Docker's own event stream is the proof that nothing was written to the Swarm while the bad config was
in place (no sleep-and-hope: the window spans whole reconcile passes of the bad operator, counted on
its /metrics), the load is the proof that no request was lost, and /readyz and the metric say why.

The bad configs themselves, and what the operator must do with each, are in `tests/lab/bad_configs.py`
(for the fault harness too).
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from swarmgate.errors import ConfigError
from swarmgate.models.settings.config import parse_config
from swarmgate.operator.cli.offline import check_with_nginx
from swarmgate.operator.planning.leadership import LEASE_NAME
from tests import docker_api
from tests.lab import http
from tests.lab.bad_configs import nginx_rejected_config
from tests.lab.cluster import Lab
from tests.lab.load import Load
from tests.lab.operator_fixture import (
    PROXY,
    RunningOperator,
    answers_everywhere,
    create_routed,
    operator,
    running_upstreams,
)
from tests.support import event_window, wait_for

pytestmark = pytest.mark.lab

DEMO_LABELS = {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"}


def _metric(op: RunningOperator, name: str, labels: str) -> float | None:
    host, port = op.listen.rsplit(":", 1)
    for line in http.get(host, "/metrics", port=int(port)).body.decode().splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return None


@pytest.mark.parametrize("hitless", [True, False], ids=["hitless", "plain"])
def test_a_config_nginx_rejects_writes_nothing_to_the_swarm_and_costs_no_request(
    lab: Lab, client: docker.DockerClient, tmp_path: Path, hitless: bool
) -> None:
    extra = "" if hitless else "    HitlessServiceUpdate = false\n"
    with operator(lab, tmp_path, extension_extra=extra, services=("demo",)) as good:
        create_routed(client, "demo", DEMO_LABELS)
        expected = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="a running demo task")
        wait_for(lambda: answers_everywhere(lab, "demo.local", expected), timeout=60, what="demo.local on every LB")
        good.stop()

        workdir = tmp_path / "bad"
        workdir.mkdir()
        bad = RunningOperator(lab, workdir, extension_extra=extra)
        bad.config_path.write_text(nginx_rejected_config(bad.config_path.read_text()))
        with pytest.raises(ConfigError, match="nginx -t rejects"):  # what check-config says of this file
            check_with_nginx(parse_config(bad.config_path.read_text(), source="bad.toml"), source="bad.toml")

        targets = {node: lab.address(node) for node in lab.lb_nodes}
        try:
            with Load(targets, hosts=("demo.local",)) as load, event_window(client) as window:
                bad.start()
                bad.wait_full_passes(3)
                host, port = bad.listen.rsplit(":", 1)
                ready = http.get(host, "/readyz", port=int(port))
                held = _metric(bad, "swarmgate_proxy_update_held", 'extension="default",reason="nginx_rejected"')
        finally:
            bad.stop()
        print(f"bad config held for 3 passes; load: {load.summary()}")
        # Taking the leader lease (one Swarm config, when leader election is on) is not a write the
        # config causes; anything else is.
        writes = [e for e in window.writes()
                  if (e.get("Actor", {}).get("Attributes") or {}).get("name") != LEASE_NAME]
        assert writes == [], "the operator wrote to the Swarm while its config was bad"
        assert load.failed_total()[0] == 0, load.summary()
        assert load.failed_total()[1] > 0
        assert ready.status == 200
        assert "held: default (nginx_rejected): nginx -t rejects the rendered config" in ready.body.decode()
        assert held == 1.0
        assert bad.log_text().count("proxy update held") == 1, bad.log_tail()
        # The proxies still serve what they served before, from the same tasks.
        assert answers_everywhere(lab, "demo.local", expected)


def _held(op: RunningOperator, reason: str) -> bool:
    return _metric(op, "swarmgate_proxy_update_held", f'extension="default",reason="{reason}"') == 1.0


def test_a_spec_swarm_rolled_back_is_not_written_again_by_the_operator_nor_by_its_successor(
    lab: Lab, client: docker.DockerClient, tmp_path: Path
) -> None:
    with operator(lab, tmp_path, services=("demo",)) as good:
        create_routed(client, "demo", DEMO_LABELS)
        expected = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="a running demo task")
        wait_for(lambda: answers_everywhere(lab, "demo.local", expected), timeout=60, what="demo.local on every LB")
        good.stop()

        def started_with_missing_image(name: str) -> RunningOperator:
            workdir = tmp_path / name
            workdir.mkdir()
            op = RunningOperator(lab, workdir)
            text = op.config_path.read_text()
            assert 'ProxyImage = "swarmgate/nginx:lab"' in text
            # Loads fine; Swarm cannot start a task of it (the lab has no registry), so it rolls back.
            op.config_path.write_text(text.replace('ProxyImage = "swarmgate/nginx:lab"',
                                                   'ProxyImage = "swarmgate/no-such-image:lab"'))
            op.start()
            return op

        first = started_with_missing_image("first")
        try:
            wait_for(lambda: (docker_api.inspect_service(client, PROXY).get("UpdateStatus") or {}).get("State")
                     == "rollback_completed", timeout=180, what="Swarm's rollback of the proxy service")
            wait_for(lambda: _held(first, "rolled_back"), timeout=30, what="the operator's hold")
            with event_window(client) as window:
                first.wait_full_passes(3)
            assert window.writes_to(PROXY) == [], "the operator wrote the rolled-back spec again"
            assert first.log_text().count("proxy update held") == 1, first.log_tail()
        finally:
            first.stop()

        # A new operator (a restart, a new leader) remembers nothing: the task that failed under
        # that spec is what tells it.
        second = started_with_missing_image("second")
        try:
            with event_window(client) as window:
                second.wait_full_passes(3)
            assert window.writes_to(PROXY) == [], "the new operator wrote the rolled-back spec again"
            assert _held(second, "rolled_back")
            host, port = second.listen.rsplit(":", 1)
            assert "held: default (rolled_back): Swarm rolled service interlock-proxy back" in http.get(
                host, "/readyz", port=int(port)).body.decode()
        finally:
            second.stop()
        assert answers_everywhere(lab, "demo.local", expected)

"""Holds: a spec Swarm rolled back from is not written again, and a config nginx rejects is not shipped.

Table-driven against Engine-API-shaped services (UpdateStatus, PreviousSpec as Docker 20.10 returns
them; after Swarm's own rollback PreviousSpec is gone, checked on the lab) and hand-built desired
states, so only the planning rule is under test.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import pytest

from swarmgate.models.routing.route_types import RouteTable
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import KIND_AGENT, KIND_BOOTSTRAP, KIND_PROXY, KIND_PROXY_CONFIG, owned_labels
from swarmgate.operator.control.readiness import readiness_body
from swarmgate.operator.planning.actions import CreateService, NoOp, PublishProxyConfig, UpdateService
from swarmgate.operator.planning.desired import ConfigObject, DesiredState, ExtensionDesired
from swarmgate.operator.planning.holds import nginx_texts, record_attempts, rejected_extensions, spec_digest
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.telemetry.holds import HoldReport
from swarmgate.operator.telemetry.metrics import REGISTRY
from swarmgate.renderers import validate
from swarmgate.renderers.nginx import RenderedConfig, render_nginx
from swarmgate.renderers.sample import sample_route_table
from swarmgate.renderers.validate import NginxGate
from tests import factories as f


def proxy_spec(image: str) -> dict[str, Any]:
    return {
        "Name": "interlock-proxy",
        "Labels": owned_labels(kind=KIND_PROXY, extension="default"),
        "TaskTemplate": {"ContainerSpec": {"Image": image, "StopSignal": "SIGQUIT"},
                         "Placement": {"Constraints": ["node.labels.nodetype==loadbalancer"]}},
        "Mode": {"Replicated": {"Replicas": 2}},
        "UpdateConfig": {"Parallelism": 1, "FailureAction": "rollback", "Order": "stop-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 80,
                                                   "PublishMode": "host"}]},
    }


GOOD, BAD, FIXED = proxy_spec("nginx:good"), proxy_spec("nginx:bad"), proxy_spec("nginx:fixed")


def proxy_task(template: dict[str, Any], state: str, index: int = 1) -> dict[str, Any]:
    """A task of the proxy as the Engine API lists it: its Spec is the TaskTemplate it was made from."""
    return {"ID": f"task{index}", "ServiceID": "proxy1", "NodeID": "lb-00", "Slot": index,
            "DesiredState": "shutdown", "Status": {"State": state, "Timestamp": f.CREATED},
            "Spec": copy.deepcopy(template["TaskTemplate"])}


def observed_proxy(spec: dict[str, Any], *, state: str | None = None, previous: dict[str, Any] | None = None,
                   message: str = "", tasks: tuple[dict[str, Any], ...] = ()) -> ObservedState:
    stored = copy.deepcopy(spec)
    stored["TaskTemplate"]["ForceUpdate"] = 0  # what Docker adds by itself
    service: dict[str, Any] = {"ID": "proxy1", "Version": {"Index": 40}, "Spec": stored, "CreatedAt": f.CREATED}
    if state is not None:
        service["UpdateStatus"] = {"State": state, "StartedAt": f.CREATED, "Message": message}
    if previous is not None:
        service["PreviousSpec"] = copy.deepcopy(previous)
    return ObservedState.from_api(services=[service], tasks=list(tasks), nodes=[])


def desired(spec: dict[str, Any], *, hitless: bool = False, text: str = "events {}\n") -> DesiredState:
    rendered = RenderedConfig.of(text)
    kind = KIND_BOOTSTRAP if hitless else KIND_PROXY_CONFIG
    labels = owned_labels(kind=kind, extension="default")
    configs = (ConfigObject(f"interlock-proxy.{kind}.abc", text.encode(), labels),)
    ext = ExtensionDesired(name="default", route_table=RouteTable(cluster=""), rendered=rendered, hitless=hitless,
                           configs=configs, proxy_spec=cast(Any, spec))
    return DesiredState(extensions=(ext,), needs_channel=False)


def existing_configs(state: DesiredState, observed: ObservedState) -> ObservedState:
    """The same snapshot with the desired config objects already created (so only the service is planned)."""
    return ObservedState(services=observed.services, tasks=observed.tasks, nodes=observed.nodes,
                         configs=tuple(ObservedState.from_api(services=[], tasks=[], nodes=[], configs=[
                             f.swarm_config(c.name, c.data, labels=c.labels)
                             for e in state.extensions for c in e.configs]).configs))


HELD = "hold"
UPDATE = "update"
CONVERGED = "converged"

CASES = [
    pytest.param(GOOD, None, None, None, BAD, UPDATE, id="no-update-status-writes"),
    pytest.param(GOOD, "completed", None, spec_digest(GOOD), BAD, UPDATE, id="last-update-completed-writes"),
    pytest.param(GOOD, "rollback_completed", None, spec_digest(BAD), BAD, HELD, id="swarm-rolled-back-our-spec"),
    pytest.param(GOOD, "rollback_started", None, spec_digest(BAD), BAD, HELD, id="rollback-under-way"),
    pytest.param(GOOD, "rollback_paused", None, spec_digest(BAD), BAD, HELD, id="rollback-paused"),
    pytest.param(GOOD, "rollback_completed", None, spec_digest(BAD), FIXED, UPDATE, id="desired-changed-writes"),
    pytest.param(GOOD, "rollback_completed", BAD, None, BAD, HELD, id="rolled-back-by-hand-previous-spec"),
    pytest.param(GOOD, "rollback_completed", FIXED, None, BAD, UPDATE, id="previous-spec-was-another"),
    pytest.param(GOOD, "rollback_completed", None, None, BAD, UPDATE, id="no-evidence-writes"),
    pytest.param(BAD, "paused", GOOD, spec_digest(BAD), BAD, CONVERGED, id="paused-on-our-spec-writes-nothing"),
    pytest.param(GOOD, "rollback_completed", None, spec_digest(BAD), GOOD, CONVERGED,
                 id="desired-is-what-swarm-restored"),
]


@pytest.mark.parametrize(("current", "state", "previous", "attempted", "wanted", "outcome"), CASES)
def test_a_spec_swarm_rolled_back_from_is_held_until_the_desired_spec_changes(
    current: dict[str, Any], state: str | None, previous: dict[str, Any] | None, attempted: str | None,
    wanted: dict[str, Any], outcome: str,
) -> None:
    want = desired(wanted)
    observed = existing_configs(want, observed_proxy(current, state=state, previous=previous,
                                                     message="update rolled back due to failure"))
    actions = plan(want, observed, published={}, attempted={"default": attempted} if attempted else {})
    if outcome == UPDATE:
        assert [type(a).__name__ for a in actions] == ["UpdateService"]
        update = actions[0]
        assert isinstance(update, UpdateService) and update.version == 40
    elif outcome == CONVERGED:
        assert actions == [NoOp()]
    else:
        assert actions == [NoOp("default", "rolled_back",
                                "Swarm rolled service interlock-proxy back from this spec; not applying it again "
                                "until the desired spec changes")]
        assert "hold default: Swarm rolled service interlock-proxy back" in actions[0].describe()


def test_a_held_spec_still_lets_route_changes_reach_the_proxies_in_place() -> None:
    want = desired(BAD, hitless=True, text="events {}\nhttp {}\n")
    observed = existing_configs(want, observed_proxy(GOOD, state="rollback_completed"))
    actions = plan(want, observed, published={"default": "0" * 64}, attempted={"default": spec_digest(BAD)})
    assert [type(a).__name__ for a in actions] == ["PublishProxyConfig", "NoOp"]
    assert isinstance(actions[0], PublishProxyConfig) and isinstance(actions[1], NoOp)
    assert actions[1].hold == "rolled_back"


@pytest.mark.parametrize("hitless", [True, False], ids=["hitless", "plain"])
def test_a_config_nginx_rejects_changes_nothing_of_its_extension(hitless: bool) -> None:
    want = desired(FIXED, hitless=hitless)
    observed = observed_proxy(GOOD)  # config objects not created yet, spec differs, nothing published
    actions = plan(want, observed, published={}, rejected={"default": 'unknown directive "bogus"'})
    assert actions == [NoOp("default", "nginx_rejected",
                            "nginx -t rejects the rendered config, so nothing of it is published and the proxies "
                            'keep the last good one: unknown directive "bogus"')]


def test_record_attempts_keeps_the_digest_of_each_written_spec() -> None:
    attempted: dict[str, str] = {}
    record_attempts([CreateService("a", GOOD), NoOp(), UpdateService("b", "id", 3, BAD, diff=None)],  # type: ignore[arg-type]
                    attempted)
    assert attempted == {"a": spec_digest(GOOD), "b": spec_digest(BAD)}
    # What Docker adds by itself does not change the digest: it is the essence's.
    stored = copy.deepcopy(GOOD)
    stored["TaskTemplate"]["ForceUpdate"] = 0
    assert spec_digest(stored) == spec_digest(GOOD)


def test_every_config_a_proxy_would_load_is_checked_and_the_first_rejection_named() -> None:
    plain = desired(GOOD, text="plain-text")
    hitless = desired(GOOD, hitless=True, text="bootstrap-text")
    agent = ConfigObject("a", b"#!/bin/sh", owned_labels(kind=KIND_AGENT, extension="default"))
    ext = hitless.extensions[0]
    with_agent = ExtensionDesired(name=ext.name, route_table=ext.route_table, rendered=RenderedConfig.of("live-text"),
                                  hitless=True, configs=(agent, *ext.configs), proxy_spec=ext.proxy_spec)
    assert nginx_texts(plain.extensions[0]) == ("plain-text",)
    assert nginx_texts(with_agent) == ("bootstrap-text", "live-text")
    asked: list[str] = []

    def verdict(text: str) -> str | None:
        asked.append(text)
        return "bad" if text == "live-text" else None

    state = DesiredState(extensions=(with_agent,), needs_channel=False)
    assert rejected_extensions(state, verdict) == {"default": "bad"}
    assert asked == ["bootstrap-text", "live-text"]
    assert rejected_extensions(plain, verdict) == {}


def test_each_hold_is_logged_once_counted_in_its_gauge_and_shown_by_readyz(caplog: pytest.LogCaptureFixture) -> None:
    report = HoldReport()
    hold = NoOp("edge", "rolled_back", "Swarm rolled service edge-proxy back from this spec")

    def gauge(reason: str) -> float | None:
        return REGISTRY.get_sample_value("swarmgate_proxy_update_held", {"extension": "edge", "reason": reason})

    with caplog.at_level(logging.INFO, logger="swarmgate.holds"):
        for _ in range(3):
            report.record([hold], ["edge"], reconcile_id="r1")
        assert [r.getMessage() for r in caplog.records] == ["proxy update held"]
        assert (gauge("rolled_back"), gauge("nginx_rejected")) == (1.0, 0.0)
        assert readiness_body(True, report) == (b"ready\nheld: edge (rolled_back): Swarm rolled service edge-proxy "
                                                b"back from this spec\n")
        report.record([NoOp()], ["edge"], reconcile_id="r2")
        assert [r.getMessage() for r in caplog.records] == ["proxy update held", "proxy update no longer held"]
        assert gauge("rolled_back") == 0.0
        assert readiness_body(True, report) == b"ready\n"


PORTS_TOO = copy.deepcopy(BAD)
PORTS_TOO["EndpointSpec"]["Ports"][0]["PublishedPort"] = 8080


@pytest.mark.parametrize(
    ("tasks", "wanted", "outcome"),
    [
        pytest.param((proxy_task(BAD, "failed"),), BAD, HELD, id="a-task-failed-under-the-desired-template"),
        pytest.param((proxy_task(BAD, "rejected"),), BAD, HELD, id="a-task-was-rejected-under-it"),
        pytest.param((proxy_task(BAD, "shutdown"),), BAD, UPDATE, id="tasks-of-it-only-stopped"),
        pytest.param((proxy_task(FIXED, "failed"),), BAD, UPDATE, id="another-template-failed"),
        pytest.param((proxy_task(BAD, "failed"),), PORTS_TOO, UPDATE, id="desired-also-changes-more-than-tasks"),
    ],
)
def test_after_a_restart_the_tasks_that_failed_under_a_spec_say_what_swarm_rolled_back_from(
    tasks: tuple[dict[str, Any], ...], wanted: dict[str, Any], outcome: str
) -> None:
    want = desired(wanted)
    observed = existing_configs(want, observed_proxy(GOOD, state="rollback_completed", tasks=tasks))
    actions = plan(want, observed, published={}, attempted={})  # a new operator: no memory of its own
    assert [a.hold if isinstance(a, NoOp) else type(a).__name__ for a in actions] == (
        ["rolled_back"] if outcome == HELD else ["UpdateService"])


def test_an_operator_whose_every_extension_is_held_writes_nothing_not_even_the_token() -> None:
    want = DesiredState(extensions=desired(FIXED, hitless=True).extensions, needs_channel=True)
    actions = plan(want, observed_proxy(GOOD), published={}, rejected={"default": "bad"})
    assert [a.hold for a in actions if isinstance(a, NoOp)] == ["nginx_rejected"]
    assert len(actions) == 1


def test_the_gate_says_what_nginx_rejects_once_per_config_and_passes_what_it_accepts() -> None:
    gate = NginxGate()
    good = render_nginx(Extension(name="default"), sample_route_table(), server_info="swarmgate/0.1.0 linux/amd64").text
    bad = good.replace("server_tokens off;", "server_tokens maybe;")
    assert gate.verdict(good) is None
    assert str(gate.verdict(bad)).startswith('invalid value "maybe" in nginx.conf:')
    checks = gate.checks
    assert (gate.verdict(good), gate.verdict(bad) is not None) == (None, True)
    assert gate.checks == checks  # verdicts are kept per digest
    assert gate.unavailable is None


def test_without_nginx_the_gate_says_so_and_lets_configs_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "nginx_binary", lambda: None)
    gate = NginxGate()
    assert gate.verdict("not nginx at all") is None
    assert gate.unavailable == "nginx is not installed: cannot check the rendered config"

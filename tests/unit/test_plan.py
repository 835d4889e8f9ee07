"""Planning against Docker-shaped snapshots: what a pass would do, as data (pure, no Docker)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, cast

import pytest

from swarmgate.models.settings.config import Config, parse_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_FINGERPRINT_LABEL, CHANNEL_SECRET_NAME
from swarmgate.operator.planning.actions import (
    Action,
    CreateChannelSecret,
    CreateConfig,
    CreateService,
    NoOp,
    PublishProxyConfig,
    RemoveConfig,
    UpdateService,
)
from swarmgate.operator.planning.channel_mount import own_channel_mount
from swarmgate.operator.planning.desired import DesiredState, build_desired, control_peers
from swarmgate.operator.planning.leadership import own_task
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.planning.runtime import Runtime
from tests import factories as f
from tests.support import check_golden

RUNTIME = Runtime(server_info="swarmgate/0.1.0 linux/amd64", agent_script=b"#!/bin/sh\n# agent\n")
SEED = """
ListenAddr = ":8080"
PollInterval = "3s"
EndpointOverride = "198.18.0.1:8080"
[Extensions.default]
  ProxyImage = "swarmgate/nginx:lab"
  ProxyServiceName = "interlock-proxy"
  PublishMode = "host"
  PublishedPort = 80
  TargetPort = 80
  PublishedSSLPort = 443
  TargetSSLPort = 443
"""


def config(extra: str = "") -> Config:
    return parse_config(SEED + extra, source="test.toml")


def cluster(*extra_services: dict[str, Any], configs: tuple[dict[str, Any], ...] = (),
            secrets: tuple[dict[str, Any], ...] = ()) -> ObservedState:
    """A manager, one LB node, and `demo` running there with a host port, plus whatever is given."""
    demo = f.service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    nodes = [f.node("mgr-0", "198.18.0.11", role="manager"),
             f.node("lb-00", "198.18.0.12", labels={"nodetype": "loadbalancer"})]
    return ObservedState.from_api(services=[demo, *extra_services], tasks=[f.task(demo, "lb-00", ports={8080: 30001})],
                                  nodes=nodes, configs=configs, secrets=secrets)


def proxy_service(spec: dict[str, Any], *, version: int = 40) -> dict[str, Any]:
    return {"ID": "proxy1", "Version": {"Index": version}, "Spec": spec, "CreatedAt": f.CREATED}


def owned_configs(observed: ObservedState) -> tuple[dict[str, Any], ...]:
    return tuple(f.swarm_config(c.name, c.data, labels=dict(c.labels)) for c in observed.configs)


def desired_for(cfg: Config, observed: ObservedState) -> DesiredState:
    return build_desired(cfg, observed, runtime=RUNTIME)


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def converge(cfg: Config) -> ObservedState:
    """The snapshot Docker would give back after a pass applied its plan (as the Engine stores it)."""
    desired = desired_for(cfg, cluster())
    proxies = []
    for ext in desired.extensions:
        assert ext.proxy_spec is not None
        # What the Engine stores has keys the operator never writes, so the spec's TypedDict does not name them.
        stored = cast(dict[str, Any], copy.deepcopy(ext.proxy_spec))
        stored["TaskTemplate"]["ForceUpdate"] = 0
        stored["TaskTemplate"]["ContainerSpec"]["Isolation"] = "default"
        proxies.append(proxy_service(stored))
    return cluster(*proxies,
                   configs=tuple(f.swarm_config(c.name, c.data, labels=c.labels)
                                 for e in desired.extensions for c in e.configs),
                   secrets=(f.swarm_secret(CHANNEL_SECRET_NAME, labels={CHANNEL_FINGERPRINT_LABEL: "ab" * 32}),))


def test_empty_swarm_plans_token_configs_publish_and_proxy_in_that_order() -> None:
    actions = plan(desired_for(config(), cluster()), cluster(), published={})
    assert kinds(actions) == ["CreateChannelSecret", "CreateConfig", "CreateConfig", "PublishProxyConfig",
                              "CreateService"]
    token = actions[0]
    assert isinstance(token, CreateChannelSecret) and token.name == CHANNEL_SECRET_NAME
    assert isinstance(actions[4], CreateService)


GOLDEN = Path(__file__).parent.parent / "golden"


@pytest.mark.parametrize(("extra", "golden"), [("", "proxy-spec-hitless.json"),
                                               ("  HitlessServiceUpdate = false\n", "proxy-spec-plain.json")],
                         ids=["hitless", "plain"])
def test_proxy_spec_matches_its_golden_file(extra: str, golden: str) -> None:
    """The whole ServiceSpec the operator writes; regenerate with SWARMGATE_UPDATE_GOLDEN=1, read the diff."""
    (created,) = [a for a in plan(desired_for(config(extra), cluster()), cluster(), published={})
                  if isinstance(a, CreateService)]
    text = json.dumps(created.spec, indent=2, sort_keys=True) + "\n"
    check_golden(GOLDEN / golden, text)


def test_the_proxy_spec_says_nothing_about_the_operator() -> None:
    """Where the operator listens, runs or says it can be reached never reaches the proxy's spec."""
    operator_svc = f.service("interlock", {})
    here = cluster(operator_svc)
    moved = ObservedState.from_api(
        services=[f.service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"}),
                  operator_svc],
        tasks=[f.task(operator_svc, "mgr-1", ports={8080: 30999})],
        nodes=[f.node("mgr-1", "198.18.0.21", role="manager")])
    elsewhere = parse_config(SEED.replace(':8080"', ':9090"').replace("198.18.0.1", "198.18.0.99"), source="t.toml")
    specs = {json.dumps(desired_for(cfg, observed).extensions[0].proxy_spec, sort_keys=True)
             for cfg, observed in ((config(), here), (config(), moved), (elsewhere, here))}
    assert len(specs) == 1
    assert "SWARMGATE_ENDPOINT" not in specs.pop()


def test_endpoint_override_is_accepted_with_a_notice() -> None:
    notices = desired_for(config(), cluster()).notices
    assert any(n.startswith("EndpointOverride is accepted and not needed") for n in notices)


def test_an_ingress_extension_is_delivered_the_plain_way_and_says_so() -> None:
    cfg = parse_config(SEED.replace('PublishMode = "host"', 'PublishMode = "ingress"'), source="t.toml")
    desired = desired_for(cfg, cluster())
    assert not desired.extensions[0].hitless
    assert any('PublishMode = "ingress" cannot address one proxy task' in n for n in desired.notices)
    assert kinds(plan(desired, cluster(), published={})) == ["CreateConfig", "CreateService"]


def test_a_state_volume_removed_by_hand_is_put_back() -> None:
    cfg = config()
    observed = converge(cfg)
    raw = next(s for s in observed.services if s.name == "interlock-proxy")
    spec = copy.deepcopy(dict(raw.spec))
    assert spec["TaskTemplate"]["ContainerSpec"]["Mounts"] == [
        {"Type": "volume", "Source": "interlock-proxy-certs", "Target": "/run/swarmgate-certs", "ReadOnly": True},
        {"Type": "volume", "Source": "interlock-proxy-state", "Target": "/var/lib/swarmgate/state"}]
    spec["TaskTemplate"]["ContainerSpec"]["Mounts"] = spec["TaskTemplate"]["ContainerSpec"]["Mounts"][:1]
    after = cluster(proxy_service(spec, version=41), configs=owned_configs(observed),
                    secrets=(f.swarm_secret(CHANNEL_SECRET_NAME),))
    desired = desired_for(cfg, after)
    actions = plan(desired, after, published={e.name: e.rendered.digest for e in desired.extensions})
    assert kinds(actions) == ["UpdateService"]
    assert isinstance(actions[0], UpdateService)
    assert actions[0].diff.paths == ('TaskTemplate.ContainerSpec.Mounts["/var/lib/swarmgate/state"]',)


def test_converged_cluster_plans_only_a_noop() -> None:
    cfg = config()
    observed = converge(cfg)
    desired = desired_for(cfg, observed)
    published = {e.name: e.rendered.digest for e in desired.extensions}
    assert plan(desired, observed, published=published) == [NoOp()]


def test_route_change_is_published_in_place_without_touching_the_service() -> None:
    cfg = config()
    observed = converge(cfg)
    stale = {"default": "0" * 64}
    assert kinds(plan(desired_for(cfg, observed), observed, published=stale)) == ["PublishProxyConfig"]


def test_hand_added_constraint_is_kept_not_fought() -> None:
    cfg = config()
    observed = converge(cfg)
    raw = next(s for s in observed.services if s.name == "interlock-proxy")
    spec = copy.deepcopy(dict(raw.spec))
    spec["TaskTemplate"]["Placement"]["Constraints"].append("node.hostname==lb-00")
    after = cluster(proxy_service(spec, version=41), configs=owned_configs(observed),
                    secrets=(f.swarm_secret(CHANNEL_SECRET_NAME),))
    desired = desired_for(cfg, after)
    published = {e.name: e.rendered.digest for e in desired.extensions}
    assert plan(desired, after, published=published) == [NoOp()]


def test_image_change_updates_the_service_with_the_version_it_was_planned_against() -> None:
    observed = converge(config())
    cfg = parse_config(SEED.replace("swarmgate/nginx:lab", "swarmgate/nginx:next"), source="t.toml")
    desired = desired_for(cfg, observed)
    actions = plan(desired, observed, published={e.name: e.rendered.digest for e in desired.extensions})
    assert kinds(actions) == ["UpdateService"]
    update = actions[0]
    assert isinstance(update, UpdateService)
    assert update.version == 40
    assert update.diff.paths == ("TaskTemplate.ContainerSpec.Image",)
    # What Docker had added by itself is carried over, not reset.
    assert update.spec["TaskTemplate"]["ContainerSpec"]["Isolation"] == "default"


def test_plain_delivery_rotates_a_content_addressed_config_and_rolls_the_service() -> None:
    cfg = config("  HitlessServiceUpdate = false\n")
    first = plan(desired_for(cfg, cluster()), cluster(), published={})
    assert kinds(first) == ["CreateConfig", "CreateService"]
    assert isinstance(first[0], CreateConfig) and first[0].config.name.startswith("interlock-proxy.proxy-config.")
    assert not any(isinstance(a, PublishProxyConfig) for a in first)


def test_unused_owned_configs_beyond_retention_are_removed_oldest_first() -> None:
    cfg = config()
    observed = converge(cfg)
    old = []
    for i in range(5):
        raw = f.swarm_config(f"interlock-proxy.agent.old{i}", b"x", labels={
            "swarmgate.managed-by": "swarmgate", "swarmgate.kind": "agent", "swarmgate.extension": "default"})
        raw["Version"] = {"Index": 100 + i}
        old.append(raw)
    user_config = f.swarm_config("someone-elses", b"y")
    proxy = observed.service_named("interlock-proxy")
    assert proxy is not None
    state = cluster(proxy_service(dict(proxy.spec)), configs=(*owned_configs(observed), *old, user_config),
                    secrets=(f.swarm_secret(CHANNEL_SECRET_NAME),))
    desired = desired_for(cfg, state)
    actions = plan(desired, state, published={e.name: e.rendered.digest for e in desired.extensions})
    assert [a.name for a in actions if isinstance(a, RemoveConfig)] == [
        "interlock-proxy.agent.old1", "interlock-proxy.agent.old0"]


def test_the_leader_lease_is_never_garbage_even_with_no_retention() -> None:
    cfg = config()
    observed = converge(cfg)
    lease = f.swarm_config("swarmgate-leader", b"lease", labels={
        "swarmgate.managed-by": "swarmgate", "swarmgate.kind": "leader"})
    stale_agent = f.swarm_config("interlock-proxy.agent.old", b"x", labels={
        "swarmgate.managed-by": "swarmgate", "swarmgate.kind": "agent", "swarmgate.extension": "default"})
    proxy = observed.service_named("interlock-proxy")
    assert proxy is not None
    state = cluster(proxy_service(dict(proxy.spec)), configs=(*owned_configs(observed), lease, stale_agent),
                    secrets=(f.swarm_secret(CHANNEL_SECRET_NAME),))
    desired = desired_for(cfg, state)
    actions = plan(desired, state, published={e.name: e.rendered.digest for e in desired.extensions}, retention=0)
    assert [a.name for a in actions if isinstance(a, RemoveConfig)] == ["interlock-proxy.agent.old"]


def test_a_foreign_service_with_the_proxy_name_is_left_alone() -> None:
    foreign = f.service("interlock-proxy", {})
    observed = cluster(foreign)
    desired = desired_for(config(), observed)
    assert desired.extensions[0].problem is not None
    assert "not managed by swarmgate" in desired.extensions[0].problem
    assert plan(desired, observed, published={}) == [NoOp()]


def test_the_control_server_admits_the_swarms_nodes_and_control_sources_only() -> None:
    cfg = parse_config('ControlSources = ["198.18.0.1"]\n' + SEED, source="t.toml")
    (ext,) = desired_for(cfg, cluster()).extensions
    assert control_peers(cfg, cluster()) == ("198.18.0.1/32", "198.18.0.11", "198.18.0.12")
    assert "# swarmgate channel peers: 198.18.0.1/32 198.18.0.11/32 198.18.0.12/32\n" in ext.rendered.text
    # The bootstrap is part of the proxy spec: it must not change with the nodes, so it lists nobody.
    assert "swarmgate channel peers" not in next(c for c in ext.configs if ".bootstrap." in c.name).data.decode()


def operator_task_of(svc: dict[str, Any]) -> Any:
    task = f.task(svc, "mgr-0", id="op1")
    task["Status"]["ContainerStatus"]["ContainerID"] = "c0ffee" * 8
    return task


@pytest.mark.parametrize("mounted", [False, True], ids=["not-mounted", "mounted"])
def test_an_operator_task_mounts_the_channel_secret_into_its_own_service_once(mounted: bool) -> None:
    secrets = [{"SecretName": "user-secret", "SecretID": "s1", "File": {"Name": "user-secret"}}]
    if mounted:
        secrets.append({"SecretName": CHANNEL_SECRET_NAME, "SecretID": "s2", "File": {"Name": CHANNEL_SECRET_NAME}})
    op = f.service("interlock", {}, id="opsvc", version=7)
    op["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"] = secrets
    observed = ObservedState.from_api(services=[op], tasks=[operator_task_of(op)],
                                      nodes=[f.node("mgr-0", "198.18.0.11", role="manager")],
                                      secrets=[f.swarm_secret(CHANNEL_SECRET_NAME)])
    me = own_task(observed, "c0ffee")
    mount = own_channel_mount(observed, me)
    if mounted:
        assert mount is None
        return
    assert mount is not None and (mount.service_id, mount.version) == ("opsvc", 7)
    refs = mount.spec["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert refs == [*secrets, {"SecretName": CHANNEL_SECRET_NAME,
                               "File": {"Name": CHANNEL_SECRET_NAME, "UID": "0", "GID": "0", "Mode": 0o400}}]
    # Nothing else of the user's service changes.
    assert {k: v for k, v in mount.spec.items() if k != "TaskTemplate"} == \
        {k: v for k, v in op["Spec"].items() if k != "TaskTemplate"}
    # No secret yet, or no task of our own (a plain process): nothing to mount.
    assert own_channel_mount(ObservedState.from_api(services=[op], tasks=[operator_task_of(op)], nodes=[]), me) is None
    assert own_channel_mount(observed, None) is None

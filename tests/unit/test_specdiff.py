"""Essence diffs of proxy specs: what Docker adds by itself is no change; what we manage is, named once."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from swarmgate.operator.planning.specdiff import ABSENT, Change, SpecDiff, diff_specs, essence, merge_managed

Spec = dict[str, Any]

CONFIG_A = {"File": {"Name": "/a", "UID": "0", "GID": "0", "Mode": 365}, "ConfigName": "p.a.1"}
CONFIG_B = {"File": {"Name": "/etc/nginx/b.conf", "UID": "0", "GID": "0", "Mode": 292}, "ConfigName": "p.b.1"}


def desired_spec() -> Spec:
    return {
        "Name": "interlock-proxy",
        "Labels": {"swarmgate.managed-by": "swarmgate"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "swarmgate/nginx:lab",
                "Args": ["-g", "daemon off;"],
                "Env": ["B=2", "A=1"],
                "StopSignal": "SIGQUIT",
                "StopGracePeriod": 0,
                "Configs": [copy.deepcopy(CONFIG_B), copy.deepcopy(CONFIG_A)],
                "Secrets": [],
            },
            "Placement": {"Constraints": ["node.labels.nodetype==loadbalancer"], "Preferences": []},
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "UpdateConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Order": "stop-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 80,
                                                   "PublishMode": "host"}]},
    }


def as_docker_stores_it(spec: Spec) -> Spec:
    """What `GET /services` gives back: IDs next to names, defaults filled in, zero values dropped,
    sets in another order."""
    stored = copy.deepcopy(spec)
    container = stored["TaskTemplate"]["ContainerSpec"]
    container["Isolation"] = "default"
    del container["StopGracePeriod"]
    del container["Secrets"]
    for i, ref in enumerate(reversed(container["Configs"])):
        ref["ConfigID"] = f"id{i}"
    container["Env"] = sorted(container["Env"])
    stored["TaskTemplate"]["ForceUpdate"] = 3
    stored["TaskTemplate"]["Runtime"] = "container"
    stored["TaskTemplate"]["Placement"]["Platforms"] = [{"Architecture": "amd64", "OS": "linux"}]
    del stored["TaskTemplate"]["Placement"]["Preferences"]
    del stored["UpdateConfig"]["Delay"]
    stored["RollbackConfig"] = {"Parallelism": 0, "FailureAction": ""}
    return stored


def container(spec: Spec) -> Spec:
    found: Spec = spec["TaskTemplate"]["ContainerSpec"]
    return found


def pin_by_hand(spec: Spec) -> None:
    spec["TaskTemplate"]["Placement"]["Constraints"].append("node.role==worker")


CASES: list[Any] = [
    pytest.param(lambda s: None, (), id="what-docker-adds-by-itself"),
    pytest.param(lambda s: container(s)["Env"].append("A=1"), (), id="a-repeated-set-member"),
    pytest.param(lambda s: container(s).__setitem__("Image", "nginx:2"),
                 (Change("TaskTemplate.ContainerSpec.Image", "nginx:2", "swarmgate/nginx:lab"),), id="image"),
    pytest.param(lambda s: s["Mode"]["Replicated"].__setitem__("Replicas", 3),
                 (Change("Mode.Replicated.Replicas", 3, 2),), id="replicas"),
    pytest.param(lambda s: container(s)["Args"].reverse(),
                 (Change("TaskTemplate.ContainerSpec.Args[0]", "daemon off;", "-g"),
                  Change("TaskTemplate.ContainerSpec.Args[1]", "-g", "daemon off;")), id="args-are-ordered"),
    pytest.param(lambda s: container(s)["Env"].remove("B=2"),
                 (Change("TaskTemplate.ContainerSpec.Env", ABSENT, "B=2"),), id="a-missing-set-member"),
    pytest.param(pin_by_hand, (Change("TaskTemplate.Placement.Constraints", "node.role==worker", ABSENT),),
                 id="an-extra-constraint"),
    pytest.param(lambda s: container(s).__setitem__("Env", ["A=1", "B=3"]),
                 (Change("TaskTemplate.ContainerSpec.Env", "B=3", ABSENT),
                  Change("TaskTemplate.ContainerSpec.Env", ABSENT, "B=2")), id="a-changed-set-member-is-out-and-in"),
    pytest.param(lambda s: container(s)["Configs"].pop(0),
                 (Change('TaskTemplate.ContainerSpec.Configs["/etc/nginx/b.conf"]', ABSENT, CONFIG_B),),
                 id="a-removed-config-is-named-by-its-mount"),
    pytest.param(lambda s: container(s)["Configs"][1].__setitem__("ConfigName", "p.a.2"),
                 (Change('TaskTemplate.ContainerSpec.Configs["/a"].ConfigName', "p.a.2", "p.a.1"),),
                 id="a-config-of-new-content"),
    pytest.param(lambda s: s["UpdateConfig"].__setitem__("Delay", 5),
                 (Change("UpdateConfig.Delay", 5, 0),), id="a-set-value-against-an-omitted-zero"),
    pytest.param(lambda s: s["TaskTemplate"]["Placement"].pop("Constraints"),
                 (Change("TaskTemplate.Placement", ABSENT,
                         {"Constraints": ["node.labels.nodetype==loadbalancer"], "Preferences": []}),),
                 id="an-absent-object-is-one-change"),
    pytest.param(lambda s: s["TaskTemplate"].__setitem__("Resources", {"Limits": {"MemoryBytes": 1}}), (),
                 id="unmanaged-fields-are-left-as-found"),
]


@pytest.mark.parametrize(("change_observed", "expected"), CASES)
def test_the_diff_of_an_observed_spec_against_the_desired_one(
        change_observed: Callable[[Spec], None], expected: tuple[Change, ...]) -> None:
    observed = as_docker_stores_it(desired_spec())
    change_observed(observed)
    assert diff_specs(observed, desired_spec()) == SpecDiff(expected)


def test_a_change_reads_as_path_before_and_after() -> None:
    assert [str(c) for c in (Change("Mode.Replicated.Replicas", 3, 2), Change("A", ABSENT, "x"))] == [
        "Mode.Replicated.Replicas: 3 -> 2", "A: (absent) -> 'x'"]


def test_the_essence_is_the_managed_fields_with_references_keyed_by_mount() -> None:
    spec = desired_spec()
    spec["TaskTemplate"]["Resources"] = {"Limits": {"MemoryBytes": 1}}
    assert essence(spec) == {
        "Name": "interlock-proxy",
        "Labels": {"swarmgate.managed-by": "swarmgate"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "swarmgate/nginx:lab",
                "Args": ["-g", "daemon off;"],
                "Env": ["B=2", "A=1"],
                "StopSignal": "SIGQUIT",
                "StopGracePeriod": 0,
                "Configs": {"/etc/nginx/b.conf": CONFIG_B, "/a": CONFIG_A},
                "Secrets": {},
            },
            "Placement": {"Constraints": ["node.labels.nodetype==loadbalancer"], "Preferences": []},
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "UpdateConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Order": "stop-first"},
        "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 80,
                                    "PublishMode": "host"}]},
    }


def test_merge_keeps_unmanaged_settings_and_replaces_managed_ones() -> None:
    observed = as_docker_stores_it(desired_spec())
    observed["TaskTemplate"]["Resources"] = {"Limits": {"MemoryBytes": 1 << 28}}
    container(observed)["Image"] = "old"
    merged = merge_managed(observed, desired_spec())
    expected = desired_spec()
    expected["TaskTemplate"].update(Resources={"Limits": {"MemoryBytes": 1 << 28}}, ForceUpdate=3,
                                    Runtime="container")
    expected["TaskTemplate"]["Placement"]["Platforms"] = [{"Architecture": "amd64", "OS": "linux"}]
    container(expected)["Isolation"] = "default"
    assert merged == expected
    assert not diff_specs(merged, desired_spec())


def test_mounts_in_another_order_are_no_change_and_a_changed_mount_is_named_by_its_target() -> None:
    """The docker CLI sorts mounts by target on any `service update` (the seed's `--constraint-add`
    does it): the proxy's state and certificate volumes swap places, which must not roll the proxy."""
    state = {"Type": "volume", "Source": "p-state", "Target": "/var/lib/swarmgate/state"}
    certs = {"Type": "volume", "Source": "p-certs", "Target": "/run/swarmgate-certs", "ReadOnly": True}

    def with_mounts(*mounts: dict[str, Any]) -> dict[str, Any]:
        return {"TaskTemplate": {"ContainerSpec": {"Mounts": list(mounts)}}}

    assert not diff_specs(with_mounts(certs, state), with_mounts(state, certs))
    writable = {**certs, "ReadOnly": False}
    assert diff_specs(with_mounts(state, writable), with_mounts(state, certs)).paths == (
        'TaskTemplate.ContainerSpec.Mounts["/run/swarmgate-certs"].ReadOnly',)

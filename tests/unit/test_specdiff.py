"""Essence diffs of proxy specs: what Docker adds by itself is no change; what we manage is."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from swarmgate.operator.planning.specdiff import diff_specs, essence, merge_managed


def desired_spec() -> dict[str, Any]:
    return {
        "Name": "interlock-proxy",
        "Labels": {"swarmgate.managed-by": "swarmgate"},
        "TaskTemplate": {
            "ContainerSpec": {
                "Image": "swarmgate/nginx:lab",
                "Env": ["B=2", "A=1"],
                "StopSignal": "SIGQUIT",
                "StopGracePeriod": 0,
                "Configs": [
                    {"File": {"Name": "/b", "UID": "0", "GID": "0", "Mode": 292}, "ConfigName": "p.b.1"},
                    {"File": {"Name": "/a", "UID": "0", "GID": "0", "Mode": 365}, "ConfigName": "p.a.1"},
                ],
                "Secrets": [],
            },
            "Placement": {"Constraints": ["node.labels.nodetype==loadbalancer"], "Preferences": []},
        },
        "Mode": {"Replicated": {"Replicas": 2}},
        "UpdateConfig": {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Order": "stop-first"},
        "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 80,
                                                   "PublishMode": "host"}]},
    }


def as_docker_stores_it(spec: dict[str, Any]) -> dict[str, Any]:
    """What `GET /services` gives back: IDs next to names, defaults filled in, zero values dropped."""
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
    stored["EndpointSpec"]["Ports"][0]["Protocol"] = "tcp"
    return stored


def test_what_docker_adds_by_itself_is_not_a_change() -> None:
    assert not diff_specs(as_docker_stores_it(desired_spec()), desired_spec())
    assert essence(as_docker_stores_it(desired_spec())) == essence(desired_spec())


@pytest.mark.parametrize(
    ("path", "value", "expected_path"),
    [
        pytest.param(("TaskTemplate", "ContainerSpec", "Image"), "nginx:2", "TaskTemplate.ContainerSpec.Image",
                     id="image"),
        pytest.param(("Mode", "Replicated", "Replicas"), 3, "Mode['Replicated']['Replicas']", id="replicas"),
        pytest.param(("TaskTemplate", "ContainerSpec", "StopSignal"), "SIGTERM",
                     "TaskTemplate.ContainerSpec.StopSignal", id="stop-signal"),
    ],
)
def test_a_managed_field_that_differs_is_one_change(path: tuple[str, ...], value: Any, expected_path: str) -> None:
    observed = as_docker_stores_it(desired_spec())
    node = observed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    diff = diff_specs(observed, desired_spec())
    assert diff.paths == (expected_path,)


def test_a_removed_config_reference_is_a_change() -> None:
    observed = as_docker_stores_it(desired_spec())
    observed["TaskTemplate"]["ContainerSpec"]["Configs"].pop()
    assert diff_specs(observed, desired_spec()).paths == ("TaskTemplate.ContainerSpec.Configs['/a']",)


def test_merge_keeps_unmanaged_settings_and_replaces_managed_ones() -> None:
    observed = as_docker_stores_it(desired_spec())
    observed["TaskTemplate"]["Resources"] = {"Limits": {"MemoryBytes": 1 << 28}}
    observed["TaskTemplate"]["ContainerSpec"]["Image"] = "old"
    merged = merge_managed(observed, desired_spec())
    assert merged["TaskTemplate"]["Resources"] == {"Limits": {"MemoryBytes": 1 << 28}}
    assert merged["TaskTemplate"]["ContainerSpec"]["Image"] == "swarmgate/nginx:lab"
    assert not diff_specs(merged, desired_spec())

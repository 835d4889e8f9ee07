"""Docker Engine API JSON → the frozen snapshot, and the offline state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from swarmgate.errors import ConfigError
from swarmgate.models.swarm.nodes import Node
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ports import PortBinding
from swarmgate.models.swarm.services import Service
from swarmgate.models.swarm.state_file import load_state_file, parse_state, state_file_document
from swarmgate.models.swarm.tasks import Task
from tests.factories import CREATED, node, service, swarm_config, swarm_secret, task

CAPTURED = Path(__file__).parent.parent / "golden" / "api" / "seed-demo-state.json"


def test_captured_engine_json_of_the_seed_demo_answers_on_each_host_port_once() -> None:
    # Captured from the lab (Docker 20.10, API 1.41): `docker service create --name ... --publish
    # mode=host,target=8080 --replicas 2`; each task's PortStatus lists its port twice.
    raw = json.loads(CAPTURED.read_text())
    assert all(len(t["Status"]["PortStatus"]["Ports"]) == 2 for t in raw["tasks"])
    observed = load_state_file(CAPTURED)
    assert [t.ports for t in observed.tasks] == [(PortBinding(8080, 32768, "tcp", "host"),) * 2] * 2
    assert [t.host_ports(8080) for t in observed.tasks] == [(32768,)] * 2
    assert {n.hostname: n.addr for n in observed.nodes} == {
        "lb-00": "198.18.0.12", "lb-01": "198.18.0.13", "mgr-0": "198.18.0.11", "wrk-0": "198.18.0.14"}
    (demo,) = observed.services
    assert demo.labels == {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"}
    assert observed.service_named(demo.name) == demo
    assert len(observed.tasks_of(demo.id)) == 2


def test_from_api_lifts_typed_fields_and_sorts_by_id() -> None:
    svc = service("demo", {"a": "b"}, id="svc1")
    tasks = [task(svc, "n2", id="t2", slot=2, ports={8080: 30001}), task(svc, "n1", id="t1", ports={8080: 30000})]
    observed = ObservedState.from_api(
        services=[svc], tasks=tasks,
        nodes=[node("n2", "10.0.0.2", labels={"nodetype": "loadbalancer"}), node("n1", "10.0.0.1")],
        configs=[swarm_config("tpl", b"hello")], secrets=[swarm_secret("demo.crt")],
    )
    assert observed.tasks[0] == Task(
        id="t1", service_id="svc1", node_id="n1", slot=1, desired_state="running", state="running",
        container_id=tasks[1]["Status"]["ContainerStatus"]["ContainerID"],
        ports=(PortBinding(8080, 30000, "tcp", "host"),) * 2,  # IPv4 and IPv6, as Swarm lists them
    )
    assert observed.node("n2") == Node(id="n2", hostname="n2", addr="10.0.0.2", role="worker",
                                       availability="active", state="ready", labels={"nodetype": "loadbalancer"})
    assert observed.node("nope") is None
    assert observed.config_named("tpl") is not None and observed.config_named("tpl").data == b"hello"  # type: ignore[union-attr]
    assert [s.name for s in observed.secrets] == ["demo.crt"]
    assert observed.services[0].version == 10


def test_what_swarmgate_reads_from_a_service_spec_is_lifted_into_typed_fields() -> None:
    raw = service("web", {"a": "b"}, id="s1", env=("A=1", "SWARMGATE_ENDPOINT=http://h:1/?x=y"),
                  constraints=("node.role==worker",), config_names=("web.conf",))
    (web,) = ObservedState.from_api(services=[raw], tasks=[], nodes=[]).services
    host_8080 = PortBinding(8080, 0, "tcp", "host")
    assert web == Service(
        id="s1", name="web", version=10, labels={"a": "b"}, spec=raw["Spec"], endpoint_ports=(host_8080,),
        created_at=CREATED, env=("A=1", "SWARMGATE_ENDPOINT=http://h:1/?x=y"), constraints=("node.role==worker",),
        config_names=("web.conf",), declared_ports=(host_8080,),
    )
    assert (web.env_value("SWARMGATE_ENDPOINT"), web.env_value("A"), web.env_value("B")) == (
        "http://h:1/?x=y", "1", None)


def test_state_file_document_round_trips(tmp_path: Path) -> None:
    svc = service("demo", {})
    doc = state_file_document(services=[svc], tasks=[task(svc, "n1")], nodes=[node("n1", "10.0.0.1")])
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc))
    assert load_state_file(path) == ObservedState.from_api(**doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{", "s.json: invalid JSON: Expecting property name enclosed in double quotes (line 1, column 2)",
                     id="syntax"),
        pytest.param("[]", "s.json: expected a JSON object with services, tasks and nodes", id="not-object"),
        pytest.param('{"services": [], "tasks": []}', "s.json: nodes: required key is missing", id="missing-key"),
        pytest.param('{"services": [], "tasks": [], "nodes": [], "extra": []}',
                     "s.json: extra: unknown key "
                     "(expected services, tasks, nodes, configs, secrets, networks)", id="unknown"),
        pytest.param('{"services": {}, "tasks": [], "nodes": []}', "s.json: services: expected a list",
                     id="not-list"),
        pytest.param('{"services": [{"ID": "x"}], "tasks": [], "nodes": []}',
                     "s.json: services[0].Spec.Name: expected a string, got None", id="service-without-name"),
        pytest.param('{"services": [{"ID": "x", "Spec": {"Name": "x", "TaskTemplate": {"ContainerSpec": '
                     '{"Env": ["A=1", 2]}}}}], "tasks": [], "nodes": []}',
                     "s.json: services[0].Spec.TaskTemplate.ContainerSpec.Env: expected a list of strings",
                     id="env-not-strings"),
        pytest.param('{"services": [], "tasks": [3], "nodes": []}',
                     "s.json: tasks[0]: expected an object, got int", id="task-not-object"),
        pytest.param('{"services": [], "tasks": [{"ID": "t", "ServiceID": "s", "Status": {"PortStatus": '
                     '{"Ports": [{"TargetPort": "80"}]}}}], "nodes": []}',
                     "s.json: tasks[0].Status.PortStatus.Ports[0].TargetPort: expected an integer, got '80'",
                     id="port-not-int"),
    ],
)
def test_a_malformed_state_file_is_one_line_with_the_path_of_the_bad_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_state(text, source="s.json")
    assert str(caught.value) == message


def test_a_host_port_whose_ipv6_twin_got_another_port_is_reached_on_the_ipv4_one() -> None:
    # On the lab: something held 0.0.0.0:32768 on wrk-0, so Docker bound the task's 8080 on IPv4 at
    # 32769 and on IPv6 at 32768, and listed them in that order. 32768 on the node's IPv4 address is
    # the other listener: routing there sends the service's requests to somebody else.
    svc = service("demo", {}, host_ports=(8080,))
    raw = task(svc, "n1", ports={8080: 32769}, ipv6_ports={8080: 32768})
    (observed,) = ObservedState.from_api(services=[svc], tasks=[raw], nodes=[node("n1", "10.0.0.1")]).tasks
    assert [b.published_port for b in observed.ports] == [32769, 32768]
    assert observed.host_ports(8080) == (32769,)


def test_two_host_mode_publishes_of_one_port_are_each_reached_on_their_ipv4_binding() -> None:
    t = Task("t", "s", "n", 1, "running", "running", None, ports=tuple(
        PortBinding(80, p, "tcp", "host") for p in (30001, 40001, 30002, 40002)))
    assert t.host_ports(80, publishes=2) == (30001, 30002)
    # Listed once each (an IPv4-only engine): both are used.
    once = Task("t", "s", "n", 1, "running", "running", None, ports=(
        PortBinding(80, 30001, "tcp", "host"), PortBinding(80, 30002, "tcp", "host")))
    assert once.host_ports(80, publishes=2) == (30001, 30002)
    # A count that fits neither shape: the first ones only, never a port that might be an IPv6 twin's.
    assert t.host_ports(80) == (30001,)


def _task_shapes() -> list[Any]:
    svc = service("web", {"com.docker.lb.hosts": "a.local"})
    plain = task(svc, "n1", ports={8080: 30001, 9090: 30002}, ipv6_ports={8080: 30003})
    return [
        pytest.param(plain, id="host-ports"),
        pytest.param(task(svc, "n1", slot=2, state="starting", desired="shutdown"), id="no-ports-stopping"),
        pytest.param({**plain, "Slot": True, "Spec": None}, id="bool-slot-no-spec"),
        pytest.param({**plain, "Status": {**plain["Status"], "ContainerStatus": {"ContainerID": ""}}},
                     id="no-container"),
        pytest.param({k: v for k, v in plain.items() if k not in ("NodeID", "DesiredState", "Status")}, id="sparse"),
    ]


@pytest.mark.parametrize("raw", _task_shapes())
def test_a_well_formed_task_reads_the_same_fast_and_field_by_field(raw: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from swarmgate.models.swarm import engine_json

    fast = engine_json.tasks_from_api([raw])
    monkeypatch.setattr(engine_json, "well_formed_task", lambda obj: None)
    slow = engine_json.tasks_from_api([raw])
    assert fast == slow and fast[0].template == slow[0].template


def _service_shapes() -> list[Any]:
    full = service("web", {"com.docker.lb.hosts": "a.local", "b": "1"}, host_ports=(8080, 9090, 8080),
                   env=("A=1",), constraints=("node.role==worker",), config_names=("c1", "c2"),
                   networks={"net1": "10.0.1.2", "net0": "10.0.0.2"})
    captured = json.loads(CAPTURED.read_text())["services"]
    return [
        pytest.param(full, id="every-lifted-field"),
        pytest.param({**full, "UpdateStatus": {"State": "rollback_completed", "Message": "m"},
                      "PreviousSpec": full["Spec"]}, id="update-and-previous-spec"),
        pytest.param({**full, "Endpoint": {"VirtualIPs": [{"NetworkID": "n", "Addr": ""}]}, "Version": None},
                     id="vip-being-allocated"),
        pytest.param({"ID": "s", "Spec": {"Name": "bare"}}, id="sparse"),
        *(pytest.param(raw, id=f"captured-{i}") for i, raw in enumerate(captured)),
    ]


@pytest.mark.parametrize("raw", _service_shapes())
def test_a_well_formed_service_reads_the_same_fast_and_field_by_field(raw: dict[str, Any],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from swarmgate.models.swarm import engine_json, service_json

    assert service_json.well_formed_service(raw) is not None
    fast = engine_json.services_from_api([raw])
    monkeypatch.setattr(engine_json, "well_formed_service", lambda obj: None)
    assert fast == engine_json.services_from_api([raw])


@pytest.mark.parametrize("raw", [
    {"ID": "s", "Spec": {"Name": "x", "Labels": {"a": 1}}},
    {"ID": "s", "Spec": {"Name": "x"}, "Version": {"Index": True}},
    {"ID": "s", "Spec": {"Name": "x", "TaskTemplate": {"Networks": [{"Target": 3}]}}},
    {"ID": "s", "Spec": {"Name": "x"}, "Endpoint": {"VirtualIPs": [{"NetworkID": "n", "Addr": 5}]}},
    {"ID": "s", "Spec": {"Name": "x"}, "PreviousSpec": []},
], ids=["label-not-text", "bool-version", "network-not-text", "vip-not-text", "previous-spec-not-object"])
def test_an_unusual_service_is_left_to_the_reader_that_names_the_bad_value(raw: dict[str, Any]) -> None:
    from swarmgate.models.swarm import service_json

    assert service_json.well_formed_service(raw) is None
    with pytest.raises(ConfigError, match=r"^s\.json: services\[0\]\."):
        parse_state(json.dumps({"services": [raw], "tasks": [], "nodes": []}), source="s.json")

"""The lab is what it claims to be, checked through the Docker API of the running lab."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import requests.exceptions
from docker.models.services import Service
from docker.types import Mount, RestartPolicy

from tests import docker_api
from tests.lab.cluster import REPO, Lab
from tests.support import host_port

pytestmark = pytest.mark.lab

IMAGES = ("swarmgate/nginx:lab", "swarmgate/demo:lab", "swarmgate/operator:lab")


@pytest.fixture
def services(lab: Lab) -> Iterator[list[Service]]:
    """Services a test creates; removed afterwards even when the test fails."""
    created: list[Service] = []
    yield created
    for svc in created:
        with contextlib.suppress(docker.errors.NotFound):
            docker_api.remove(svc)


def _wait_task(svc: Service, timeout: float = 60, state: str = "running") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in docker_api.service_tasks(svc):
            if task["Status"]["State"] == state:
                return task
            if task["Status"]["State"] in ("failed", "rejected"):
                raise AssertionError(f"task {task['Status']}")
        time.sleep(0.3)
    raise AssertionError(f"no {state} task of {svc.name} within {timeout} s: {docker_api.service_tasks(svc)}")


def test_nodes_roles_hostnames_and_labels(lab: Lab) -> None:
    mgr = lab.manager_client()
    nodes = {n.attrs["Description"]["Hostname"]: n.attrs for n in mgr.nodes.list()}
    assert sorted(nodes) == sorted(lab.names)
    for node in lab.nodes:
        attrs = nodes[node.name]
        assert attrs["Spec"]["Role"] == node.role
        assert attrs["Status"]["State"] == "ready"
        assert attrs["Status"]["Addr"] == node.address
        labels = attrs["Spec"].get("Labels") or {}
        assert (labels.get("nodetype") == "loadbalancer") == node.lb
    assert [n for n in lab.names if n.startswith("lb-")] == lab.lb_nodes
    assert lab.managers == [f"mgr-{i}" for i in range(len(lab.managers))]


def test_each_node_is_its_own_engine(lab: Lab) -> None:
    ids = set()
    for name in lab.names:
        info = lab.client(name).info()
        assert info["Name"] == name  # hostname from the node's UTS namespace
        assert info["Swarm"]["NodeAddr"] == lab.address(name)
        ids.add(info["ID"])
    assert len(ids) == len(lab.names)


def test_images_on_every_node(lab: Lab) -> None:
    expected = None
    for name in lab.names:
        have = {tag: img.id for img in lab.client(name).images.list() for tag in img.tags}
        for image in IMAGES:
            assert image in have, f"{image} missing on {name}"
        ids = {image: have[image] for image in IMAGES}
        expected = expected or ids
        assert ids == expected, f"{name} holds other image versions"
    cfg = lab.client(lab.names[0]).images.get("swarmgate/nginx:lab").attrs["Config"]
    assert cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Cmd"] == ["nginx", "-g", "daemon off;"]


def test_host_mode_published_service_answers_from_host(lab: Lab, services: list[Service]) -> None:
    target = (lab.plain_workers or lab.workers)[0]
    mgr = lab.manager_client()
    svc = docker_api.run_service(
        mgr, "swarmgate/demo:lab",
        name=f"labtest-demo-{uuid.uuid4().hex[:6]}",
        env=["METADATA=lab-test"],
        constraints=[f"node.hostname=={target}"],
        endpoint_spec={"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]},
    )
    services.append(svc)
    task = _wait_task(svc)
    port = host_port(task, 8080)
    assert port is not None
    container_id = task["Status"]["ContainerStatus"]["ContainerID"]
    hostname = lab.client(target).containers.get(container_id).attrs["Config"]["Hostname"]
    request_id = uuid.uuid4().hex
    url = f"http://{lab.address(target)}:{port}/ping"
    deadline = time.monotonic() + 20
    while True:
        try:
            req = urllib.request.Request(url, headers={"X-Request-Id": request_id})
            with urllib.request.urlopen(req, timeout=3) as resp:
                status, ctype, body = resp.status, resp.headers["Content-Type"], resp.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    assert status == 200
    assert "json" in ctype
    assert json.loads(body) == {
        "instance": hostname,
        "version": "0.1",
        "metadata": "lab-test",
        "request_id": request_id,
    }
    with urllib.request.urlopen(f"http://{lab.address(target)}:{port}/", timeout=3) as resp:
        assert resp.status == 200


def test_docker_sock_in_a_container_is_its_nodes_engine(lab: Lab, services: list[Service]) -> None:
    target = lab.lb_nodes[0] if lab.lb_nodes else lab.workers[0]
    svc = docker_api.run_service(
        lab.manager_client(), "swarmgate/operator:lab",
        name=f"labtest-sock-{uuid.uuid4().hex[:6]}",
        command=["/usr/bin/python3.11"],
        args=["-c", "import docker; print('ENGINE', docker.from_env().info()['Name'])"],
        mounts=[Mount(target="/var/run/docker.sock", source="/var/run/docker.sock", type="bind")],
        constraints=[f"node.hostname=={target}"],
        restart_policy=RestartPolicy(condition="none"),
    )
    services.append(svc)
    task = _wait_task(svc, state="complete")
    # The container's own output, from its node's engine: Swarm's log stream goes through the leader's
    # dispatcher, and right after the fault tests froze and stopped managers it answered "node ... is
    # not available" for minutes in two CI runs, which says nothing about the socket.
    node = lab.client(target)
    try:
        container = node.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
        logs = container.logs(stdout=True, stderr=True).decode()
    finally:
        node.close()
    assert f"ENGINE {target}" in logs, logs


def _lab_py(*args: str) -> None:
    subprocess.run([sys.executable, str(REPO / "lab" / "lab.py"), *args], check=True, timeout=300)


def _swarm_node(lab: Lab, via: str, name: str) -> dict[str, Any]:
    client = lab.client(via)
    try:
        return next(n.attrs for n in client.nodes.list() if n.attrs["Description"]["Hostname"] == name)
    finally:
        client.close()


def _wait_node_state(lab: Lab, via: str, name: str, state: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        attrs = _swarm_node(lab, via, name)
        if attrs["Status"]["State"] == state:
            return attrs
        assert time.monotonic() < deadline, f"{name} not {state} within {timeout} s: {attrs['Status']}"
        time.sleep(0.5)


@pytest.mark.parametrize("role", ["worker", "manager"])
def test_stop_node_is_a_power_cut_and_start_node_brings_back_the_same_node(lab: Lab, role: str) -> None:
    # The last node of the role: never mgr-0 (DOCKER_HOST of other tools) nor an LB node.
    name = (lab.managers if role == "manager" else lab.plain_workers or lab.workers)[-1]
    via = next(m for m in lab.managers if m != name)
    before = _swarm_node(lab, via, name)
    assert before["Status"]["State"] == "ready"
    node_dir = REPO / ".lab" / "nodes" / name / "docker"
    try:
        _lab_py("stop-node", name)
        # Its engine died at once: the socket answers no more; its data root is still there.
        with pytest.raises((docker.errors.DockerException, requests.exceptions.ConnectionError)):
            lab.client(name).ping()
        assert node_dir.is_dir()
        state = json.loads((REPO / ".lab" / "state.json").read_text())
        assert next(n for n in state["nodes"] if n["name"] == name)["stopped"] is True
        down = _wait_node_state(lab, via, name, "down", timeout=90)
        assert down["ID"] == before["ID"]
    finally:
        _lab_py("start-node", name)
    back = _wait_node_state(lab, via, name, "ready", timeout=90)
    assert back["ID"] == before["ID"]  # the same Swarm node, not a new one
    assert sorted(n.attrs["Description"]["Hostname"] for n in lab.client(via).nodes.list()) == sorted(lab.names)
    info = lab.client(name).info()
    assert info["Swarm"]["NodeID"] == before["ID"] and info["Swarm"]["LocalNodeState"] == "active"

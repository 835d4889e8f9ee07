"""`manifests/stack.yml` deployed with `docker stack deploy` on the lab routes the seed's demo.

The stack file and `manifests/config.toml` are used as shipped; only the images are the lab's:
`SWARMGATE_IMAGE` (a variable the stack file reads) and the config's `ProxyImage` (a copy of the
file with that one line changed, passed as `SWARMGATE_CONFIG`).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests import docker_api
from tests.lab.cluster import REPO, Lab
from tests.lab.operator_fixture import PROXY, clean_swarm
from tests.lab.operator_fixture import _remove_when_unused as remove_when_unused
from tests.lab.test_seed_e2e import (
    DEMO,
    DEMO_CREATE,
    docker_cli,
    first_200,
    node_ids,
    operator_containers,
)
from tests.support import host_port, wait_for

pytestmark = pytest.mark.lab

STACK = "swarmgate"
OPERATOR = f"{STACK}_interlock"
MANIFESTS = REPO / "manifests"


def remove_stack(lab: Lab, client: docker.DockerClient) -> None:
    if client.services.list(filters={"label": f"com.docker.stack.namespace={STACK}"}):
        docker_cli(lab, "stack", "rm", STACK)
    wait_for(lambda: not operator_containers(lab, OPERATOR), timeout=60, what="the operator's container to stop")
    clean_swarm(client, services=(DEMO,), lab=lab)
    # `stack rm` removes the stack's config unless a stopping task still held it.
    for cfg in client.configs.list(filters={"label": f"com.docker.stack.namespace={STACK}"}):
        remove_when_unused(cfg.remove)


@pytest.fixture
def stack_env(lab: Lab, tmp_path: Path) -> Iterator[dict[str, str]]:
    config = (MANIFESTS / "config.toml").read_text()
    lab_config, replaced = re.subn(r'(?m)^(\s*ProxyImage = )".*"$', r'\1"swarmgate/nginx:lab"', config)
    assert replaced == 1
    (tmp_path / "config.toml").write_text(lab_config)
    client = lab.manager_client()
    remove_stack(lab, client)
    try:
        yield {**lab.env, "SWARMGATE_IMAGE": "swarmgate/operator:lab",
               "SWARMGATE_CONFIG": str(tmp_path / "config.toml")}
    finally:
        try:
            remove_stack(lab, client)
        finally:
            client.close()


def container_health(lab: Lab, node_hostname: str, container_id: str) -> str:
    node = lab.client(node_hostname)
    try:
        state = node.api.inspect_container(container_id)["State"]
        return str(state.get("Health", {}).get("Status", "none"))
    finally:
        node.close()


def test_stack_manifest_deploys_the_operator_and_routes_the_demo(lab: Lab, stack_env: dict[str, str]) -> None:
    client = lab.manager_client()
    lab_env = Lab(nodes=lab.nodes, host_addr=lab.host_addr, env=stack_env)
    # The README's first step: the channel key's secret, made by the operator image, straight into Swarm.
    key = subprocess.run(["docker", "run", "--rm", "--network", "none", "swarmgate/operator:lab", "channel-key"],
                         env=lab.env, capture_output=True, check=True, timeout=60).stdout
    subprocess.run(["docker", "secret", "create", "swarmgate-channel", "-"], input=key, env=lab.env,
                   capture_output=True, check=True, timeout=60)
    # No registry in the lab: never ask one for the image digest.
    docker_cli(lab_env, "stack", "deploy", "--resolve-image", "never", "-c", str(MANIFESTS / "stack.yml"), STACK)

    (op_task,) = wait_for(lambda: docker_api.running_tasks(client, OPERATOR) or None, timeout=60, what="operator task")
    nodes = node_ids(client)
    op_node = nodes[op_task["NodeID"]]
    assert op_node["Spec"]["Role"] == "manager"
    op_port = host_port(op_task, 8080)
    assert op_port is not None
    container = op_task["Status"]["ContainerStatus"]["ContainerID"]
    # The stack's healthcheck (/readyz on ListenAddr) passes inside the operator's container.
    wait_for(lambda: container_health(lab, op_node["Description"]["Hostname"], container) == "healthy",
             timeout=60, interval=1, what="the operator's healthcheck")

    # The operator creates its proxy; nothing about the operator (its node, its port) is in its spec.
    wait_for(lambda: client.services.list(filters={"name": PROXY}) or None, timeout=60,
             what=f"the operator to create {PROXY}")
    env = docker_api.inspect_service(client, PROXY)["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert not [e for e in env if "SWARMGATE_ENDPOINT" in e or f":{op_port}" in e], env

    # Detached: the waits below are the proof; the CLI's own 5-second watch of the task adds nothing.
    docker_cli(lab, *("--detach" if a == "--detach=false" else a for a in DEMO_CREATE), timeout=180)
    lb_ids = {nid for nid, n in nodes.items() if n["Description"]["Hostname"] in lab.lb_nodes}
    proxies = wait_for(lambda: (lambda ts: ts if len(ts) >= 2 else None)(docker_api.running_tasks(client, PROXY)),
                       timeout=60, what="two running proxy tasks")
    assert {t["NodeID"] for t in proxies} <= lb_ids
    (demo_task,) = wait_for(lambda: docker_api.running_tasks(client, DEMO) or None, timeout=60, what="demo task")
    demo_port = host_port(demo_task, 8080)
    assert demo_port is not None
    upstream = f"{nodes[demo_task['NodeID']]['Status']['Addr']}:{demo_port}"

    for proxy in proxies:
        address = nodes[proxy["NodeID"]]["Status"]["Addr"]
        _, resp = first_200(address, timeout=30)  # through tests/lab/http.py: lab addresses only
        assert resp.headers["x-upstream-addr"] == upstream
        assert resp.headers["x-server-info"].startswith("swarmgate/")
        body = json.loads(resp.body)
        assert body["metadata"] == "demo"
        assert body["request_id"] == resp.headers["x-request-id"]
    # The stack mounts the key: the operator never had to mount it into itself and restart.
    assert len(docker_api.tasks(client, filters={"service": OPERATOR})) == 1
    client.close()

"""The seed's scenario, end to end, the way its reader runs it.

Every step is the seed's own `docker` command line, sent to the lab's first manager, with only the
image names changed: label the LB nodes, store the TOML as a Swarm config, start the operator as a
Swarm service (docker.sock mounted, pinned to managers, 8080 published in host mode without a fixed
port), pin its proxy by hand, deploy `demo`, then ask every LB node for `/ping` with `Host: demo.local`.
Nothing here tells the operator where it is, and nothing of where it runs reaches the proxy: the
operator pushes configs to its proxies, so the proxy's spec carries no address of the operator.

Then the status page of that same deployment, in a real headless browser (second test; it reuses the
first one's deployment, and deploys with scripts/demo.sh only when run alone).

Works on any lab with at least two LB nodes; the seed's cluster is `make lab-up MANAGERS=3 WORKERS=5 LB=2`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import docker_api, html_check
from tests.lab import browser, http, shared_seed
from tests.lab.cluster import REPO, Lab
from tests.lab.operator_fixture import (
    CHANNEL_SECRET,
    PROXY,
    clean_swarm,
    create_routed,
    operator_endpoints,
    running_upstreams,
    wait_full_passes,
)
from tests.lab.operator_fixture import _remove_when_unused as remove_when_unused
from tests.lab.seed_deployment import Seed
from tests.support import event_window, host_port, wait_for

# It deploys the seed itself, from a Swarm without it: first of the modules that share it.
pytestmark = [pytest.mark.lab, pytest.mark.shared_seed(keeps=True, fresh=True)]

OPERATOR = "interlock"
DEMO = "demo"
SHOP, SHOP_HOST = "shop", "shop.local"  # set aside by the status page's test: its port label is a word
SCREENSHOT = REPO / "docs" / "images" / "status-page.png"
CONFIG = "service.interlock.conf"
PIN = "node.labels.nodetype==loadbalancer"

SEED_TOML = (REPO / "lab" / "seed-config.toml").read_text()

OPERATOR_CREATE = [
    "service", "create",
    "--name", OPERATOR,
    "--mount", "src=/var/run/docker.sock,dst=/var/run/docker.sock,type=bind",
    "--constraint", "node.role==manager",
    "--publish", "mode=host,target=8080",
    "--config", f"src={CONFIG},target=/config.toml",
    "swarmgate/operator:lab", "-D", "run", "-c", "/config.toml",
]
PIN_UPDATE = ["service", "update", "--constraint-add", PIN, PROXY]
DEMO_CREATE = [
    "service", "create",
    "--name", DEMO,
    "--detach=false",
    "--label", "com.docker.lb.hosts=demo.local",
    "--label", "com.docker.lb.port=8080",
    "--publish", "mode=host,target=8080",
    "--env", "METADATA=demo",
    "swarmgate/demo:lab",
]


def docker_cli(lab: Lab, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
    """One `docker` command against the lab's manager, as the seed's reader types it."""
    proc = subprocess.run(["docker", *args], env=lab.env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"docker {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
    return proc.stdout


def remove_seed_objects(lab: Lab, client: docker.DockerClient) -> None:
    """Everything the seed's steps and the operator create, in an order that cannot race: the operator
    first (and its task gone, so it cannot re-create its proxy), then the rest."""
    for svc in client.services.list(filters={"name": OPERATOR}):
        if svc.name == OPERATOR:
            docker_api.remove(svc)
    wait_for(lambda: not operator_containers(lab), timeout=60, what="the operator's container to stop")
    clean_swarm(client, services=(DEMO, SHOP), lab=lab)
    for cfg in client.configs.list(filters={"name": CONFIG}):
        if cfg.name == CONFIG:
            remove_when_unused(cfg.remove)


def operator_containers(lab: Lab, service: str = OPERATOR) -> list[str]:
    """Containers of the operator's service still running on any manager (a removed service's task
    stops asynchronously; until it has, the operator could still re-create its proxy)."""
    found: list[str] = []
    for name in lab.managers:
        node = lab.client(name)
        try:
            found += [c.id for c in node.containers.list(ignore_removed=True,
                filters={"label": f"com.docker.swarm.service.name={service}"}) if c.id is not None]
        finally:
            node.close()
    return found


@pytest.fixture(scope="module")
def swarm(lab: Lab) -> Iterator[docker.DockerClient]:
    """A Swarm without the seed's objects; afterwards the deployment the tests made is kept for the
    next module that uses the seed's (tests/lab/shared_seed.py) when it is as deployed, else removed."""
    assert len(lab.lb_nodes) >= 2, "the seed needs two load-balancer nodes"
    client = lab.manager_client()
    remove_seed_objects(lab, client)
    try:
        yield client
    finally:
        try:
            for svc in client.services.list(filters={"name": SHOP}):
                if svc.name == SHOP:
                    docker_api.remove(svc)
            present = bool(client.services.list(filters={"name": OPERATOR}))
            if not (present and shared_seed.keep(Seed(lab, log=lambda msg: print(f"[seed e2e] {msg}", flush=True)))):
                remove_seed_objects(lab, client)
        finally:
            client.close()


def node_ids(client: docker.DockerClient) -> dict[str, dict[str, Any]]:
    return {n["ID"]: n for n in client.api.nodes()}


def proxy_spec(client: docker.DockerClient) -> dict[str, Any]:
    spec: dict[str, Any] = docker_api.inspect_service(client, PROXY)
    return spec


def swarm_time(stamp: str) -> float:
    """A Docker timestamp (RFC 3339, nanoseconds, UTC) as a Unix time."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


def first_200(address: str, *, timeout: float) -> tuple[float, http.Response]:
    """Poll one LB node until `/ping` for demo.local answers 200; the moment (Unix time) and the answer."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            resp = http.get(address, "/ping", host="demo.local", timeout=2)
            if resp.status == 200:
                return time.time(), resp
            last = resp.status
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{address}: no 200 for demo.local/ping within {timeout}s (last: {last})")


def test_seed_scenario_routes_demo_through_every_lb_node(lab: Lab, swarm: docker.DockerClient) -> None:
    client = swarm
    lb_nodes = lab.lb_nodes

    # 1. Node labels (the lab set them already; the seed's command must still work as written).
    for name in lb_nodes:
        assert docker_cli(lab, "node", "update", "--label-add", "nodetype=loadbalancer", name).strip() == name
        labels = docker_cli(lab, "node", "inspect", "-f", "{{ .Spec.Labels  }}", name)
        assert "nodetype:loadbalancer" in labels

    # 2. The operator's configuration, from stdin, as `cat << EOF | docker config create ... -`.
    docker_cli(lab, "config", "create", CONFIG, "-", stdin=SEED_TOML)

    # 3. The operator as a Swarm service, exactly the seed's command line (the CLI waits for it).
    t_operator = time.monotonic()
    docker_cli(lab, *OPERATOR_CREATE, timeout=180)
    # On its first pass the operator creates the channel key's secret, and then mounts it into its
    # own service: Swarm restarts the operator once, holding the key (and touches no proxy task,
    # checked below). From then on the running operator task is the one that mounts it.
    wait_for(lambda: CHANNEL_SECRET in json.dumps(
        docker_api.inspect_service(client, OPERATOR)["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []),
        timeout=60, what="the operator to mount the channel key into its own service")
    (op_task,) = wait_for(lambda: [t for t in docker_api.running_tasks(client, OPERATOR)
                                   if CHANNEL_SECRET in json.dumps(t["Spec"]["ContainerSpec"].get("Secrets") or [])]
                          or None, timeout=60, what="the operator task that holds the channel key")
    nodes = node_ids(client)
    assert nodes[op_task["NodeID"]]["Spec"]["Role"] == "manager"
    op_port = host_port(op_task, 8080)
    assert op_port is not None

    # The operator creates its proxy by itself; the proxy's spec says nothing of where it runs.
    wait_for(lambda: client.services.list(filters={"name": PROXY}) or None, timeout=60,
             what=f"the operator to create {PROXY}")
    t_proxy = time.monotonic()
    spec_text = json.dumps(proxy_spec(client)["Spec"])
    assert "SWARMGATE_ENDPOINT" not in spec_text and f":{op_port}" not in spec_text, spec_text

    # 4. The seed's manual pin; the operator must keep it and stop touching the service.
    wait_for(lambda: len(docker_api.running_tasks(client, PROXY)) >= 2 or None, timeout=60, what="two proxy tasks")
    tasks_before_pin = len(docker_api.tasks(client, filters={"service": PROXY}))
    docker_cli(lab, *PIN_UPDATE, timeout=180)
    # From the pin on, Docker's event stream over several whole passes of the operator (it counts
    # them on /metrics): the operator saw the pinned spec that often and wrote nothing to its proxy.
    with event_window(client, types=("service",)) as window:
        wait_full_passes(nodes[op_task["NodeID"]]["Status"]["Addr"], op_port, 4, timeout=60)
    assert window.writes_to(PROXY) == [], "the operator updated the proxy after the seed's pin"
    assert PIN in proxy_spec(client)["Spec"]["TaskTemplate"]["Placement"]["Constraints"]

    # The proxy runs on LB nodes only, one task per node (host-mode port 80).
    lb_ids = {nid for nid, n in nodes.items() if n["Description"]["Hostname"] in lb_nodes}
    proxies = wait_for(lambda: (lambda ts: ts if len(ts) >= 2 else None)(docker_api.running_tasks(client, PROXY)),
                       timeout=60, what="two running proxy tasks")
    assert {t["NodeID"] for t in proxies} <= lb_ids
    assert len({t["NodeID"] for t in proxies}) == len(proxies)
    proxy_nodes = {nodes[t["NodeID"]]["Description"]["Hostname"]: t for t in proxies}

    # 5. The application, the seed's way (`--detach=false`: the CLI returns once its task runs),
    # while every proxy node is asked, ten times a second, until it routes demo.local.
    with ThreadPoolExecutor(len(proxy_nodes)) as pool:
        polls = {name: pool.submit(first_200, lab.address(name), timeout=240) for name in sorted(proxy_nodes)}
        t_demo = time.monotonic()
        docker_cli(lab, *DEMO_CREATE, timeout=180)
        t_demo_cli = time.monotonic()
        answers = {name: poll.result() for name, poll in polls.items()}

    (demo_task,) = docker_api.running_tasks(client, DEMO)
    demo_port = host_port(demo_task, 8080)
    assert demo_port is not None
    upstream = f"{nodes[demo_task['NodeID']]['Status']['Addr']}:{demo_port}"
    assert demo_port >= 30000, f"expected a high port from Swarm's dynamic range, got {demo_port}"

    # Timings: the CLI's own wall time includes its registry lookup for the image digest (there is
    # no registry in the lab, so that lookup has to time out); Swarm's timestamps do not.
    created = swarm_time(docker_api.inspect_service(client, DEMO)["CreatedAt"])
    started = swarm_time(demo_task["Status"]["Timestamp"])
    figures: dict[str, float] = {
        "operator_cli_to_proxy_service_s": round(t_proxy - t_operator, 2),
        "demo_cli_wall_s": round(t_demo_cli - t_demo, 2),
        # Host mode already pins the proxy to the LB nodes: the seed's pin should replace no task.
        "proxy_tasks_started_by_pin": len(docker_api.tasks(client, filters={"service": PROXY})) - tasks_before_pin,
        "operator_tasks_started": len(docker_api.tasks(client, filters={"service": OPERATOR})),
    }
    # The operator's one bootstrap restart (and the seed's pin) replaced no proxy task: two LB nodes,
    # two proxy tasks ever.
    assert len(docker_api.tasks(client, filters={"service": PROXY})) == len(proxy_nodes)
    assert figures["operator_tasks_started"] == 2
    for name, (t_200, resp) in answers.items():
        figures[f"demo_created_to_first_200_{name}_s"] = round(t_200 - created, 2)
        figures[f"demo_running_to_first_200_{name}_s"] = round(t_200 - started, 2)

        # What the seed's `curl -vs` shows.
        assert resp.headers["x-request-id"]
        container_id = proxy_nodes[name]["Status"]["ContainerStatus"]["ContainerID"]
        assert resp.headers["x-proxy-id"] == container_id[:12], "x-proxy-id names the proxy container"
        assert resp.headers["x-server-info"].startswith("swarmgate/")
        assert resp.headers["x-upstream-addr"] == upstream
        assert resp.headers["x-upstream-response-time"]
        body = json.loads(resp.body)
        assert body["request_id"] == resp.headers["x-request-id"]
        assert body["metadata"] == "demo"

    print(f"\nseed e2e figures: {json.dumps(figures, sort_keys=True)}")


def test_status_page_shows_the_seed_deployment_in_a_browser(lab: Lab, swarm: docker.DockerClient,
                                                             tmp_path: Path) -> None:
    """The operator's `/` in chromium, checked against the live Swarm: demo.local routed to its task,
    a set-aside service with its reason, every proxy task current, and its host's 503 explained.
    `SWARMGATE_UPDATE_SCREENSHOT=1` writes the screenshot to docs/images/ (the README shows it)."""
    client = swarm
    if not docker_api.running_tasks(client, DEMO):  # run alone: deploy the seed the seed's way
        Seed(lab).deploy()
    # One running operator task (the one that mounts the channel key, after its bootstrap restart).
    ((address, port),) = wait_for(lambda: (lambda found: found if len(found) == 1 else None)(
        list(operator_endpoints(client, (OPERATOR,)).values())), timeout=60, what="the operator's published 8080")
    create_routed(client, SHOP, {"com.docker.lb.hosts": SHOP_HOST, "com.docker.lb.port": "http"})

    def settled() -> dict[str, Any] | None:
        status: dict[str, Any] = json.loads(http.get(address, "/v1/status", port=port).body)
        ext = status.get("clusters", {}).get("default") or {}
        shown = any(a["service"] == SHOP for a in status.get("set_aside", []))
        return status if shown and ext.get("all_current") and len(ext["proxies"]) == len(lab.lb_nodes) else None

    wait_for(settled, timeout=60, what=f"{SHOP} set aside and every proxy current in /v1/status")
    for node in lab.lb_nodes:  # what the page must explain
        assert http.get(lab.address(node), "/", host=SHOP_HOST).status == 503

    base = f"http://{address}:{port}/"
    assert html_check.problems(http.get(address, "/", port=port).body.decode()) == []
    page = browser.dom(base)
    routes = {r[0]: r for r in html_check.rows(page, "routes")[1:]}
    assert routes["demo.local"][2] == DEMO
    assert set(routes["demo.local"][3].split()) == running_upstreams(client, DEMO)
    aside = {r[0]: r for r in html_check.rows(page, "set-aside")[1:]}
    assert aside[f"{SHOP} (default)"][1:] == [f"{SHOP_HOST} 503",
                                              "label com.docker.lb.port: expected an integer 1-65535, got 'http'",
                                              "com.docker.lb.port"]
    assert "Extension default: configuration" in html_check.text(page)
    assert "every proxy current" in html_check.text(page)
    nodes = {n["ID"]: n["Description"]["Hostname"] for n in client.api.nodes()}
    live = {t["ID"]: nodes[t["NodeID"]] for t in docker_api.running_tasks(client, PROXY)}
    assert {r[0]: (r[1], r[3]) for r in html_check.rows(page, "proxies")[1:]} == {
        task: (node, "yes") for task, node in live.items()}
    assert sorted(live.values()) == sorted(lab.lb_nodes)

    explained = html_check.text(browser.dom(f"{base}?host={SHOP_HOST}"))
    assert f"No route serves {SHOP_HOST}: every proxy answers it with 503." in explained
    assert "label com.docker.lb.port: expected an integer 1-65535, got 'http'" in explained

    shot = browser.screenshot(base, tmp_path / "status-page.png")
    if os.environ.get("SWARMGATE_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        SCREENSHOT.write_bytes(shot)

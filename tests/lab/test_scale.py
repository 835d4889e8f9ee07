"""300 routed services on the seed's cluster: created, routed on every LB node, removed, nothing left.

The operator runs as a host process against the lab's Swarm (`operator` fixture, push delivery, the
seed's TOML). 300 services are created the seed's way (`--publish mode=host,target=8080`, one task
each); every one of them must then answer through every LB node from its own task (`x-upstream-addr`
is that task's node address and host port), and once they are removed every one of their hosts must
get the 503 of an unknown host, with no task or container of theirs left on any node.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

from tests import docker_api
from tests.lab import http
from tests.lab.cluster import Lab
from tests.lab.operator_fixture import create_routed, operator
from tests.support import host_port, wait_for

SERVICES = 300
NAMES = tuple(f"scale-{i:03d}" for i in range(SERVICES))
PROBES = 8  # concurrent requests while checking every host on every LB node


def _upstreams(client: docker.DockerClient) -> dict[str, str]:
    """Service name → `address:port` of its one running task (services of this test only)."""
    addrs = {n["ID"]: n["Status"]["Addr"] for n in client.api.nodes()}
    names = {s["ID"]: s["Spec"]["Name"] for s in docker_api.services(client) if s["Spec"]["Name"] in NAMES}
    found = {}
    for task in docker_api.tasks(client, filters={"desired-state": "running"}):
        port = host_port(task, 8080)
        if task["ServiceID"] in names and task["Status"]["State"] == "running" and port:
            found[names[task["ServiceID"]]] = f"{addrs[task['NodeID']]}:{port}"
    return found


def _wrong_answers(lab: Lab, expected: dict[str, str | None]) -> list[str]:
    """Hosts (`name.scale.local`) that some LB node does not answer as expected: from the given task, or
    with the unknown host's 503 when the expected upstream is None."""
    def wrong_answer(node: str, name: str, upstream: str | None) -> str | None:
        try:
            r = http.get(lab.address(node), "/ping", host=f"{name}.scale.local", timeout=2)
        except OSError as exc:
            return f"{node} {name}: {type(exc).__name__}"
        if upstream is None and r.status != 503:
            return f"{node} {name}: {r.status}, expected 503"
        if upstream is not None and (r.status != 200 or r.headers.get("x-upstream-addr") != upstream):
            return f"{node} {name}: {r.status} from {r.headers.get('x-upstream-addr')}"
        return None

    # 600 requests a look: side by side, so a look takes a fraction of a second, not several.
    with ThreadPoolExecutor(PROBES) as pool:
        found = pool.map(lambda job: wrong_answer(*job),
                         [(node, name, upstream) for node in lab.lb_nodes for name, upstream in expected.items()])
        return [w for w in found if w is not None]


def test_300_services_are_routed_on_every_lb_node_and_removed_without_a_trace(lab: Lab, tmp_path: Path) -> None:
    client = lab.manager_client()
    with operator(lab, tmp_path, services=NAMES) as op:
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: create_routed(client, name, {
                "com.docker.lb.hosts": f"{name}.scale.local", "com.docker.lb.port": "8080"}), NAMES))
        created = time.monotonic()

        def all_running() -> dict[str, str] | None:
            found = _upstreams(client)
            return found if len(found) == SERVICES else None

        upstreams = wait_for(all_running, timeout=150, interval=1, what=f"{SERVICES} services running")
        running = time.monotonic()
        left: list[str] = []

        def all_routed() -> bool:
            # Read the tasks again each time: a task Swarm restarted meanwhile has a new host port, and
            # its route is right when it names the new one.
            nonlocal left
            current = _upstreams(client)
            left = _wrong_answers(lab, {name: current.get(name, upstreams[name]) for name in NAMES})
            return not left

        wait_for(all_routed, timeout=60, interval=0.5,
                 what=lambda: f"every host routed on every LB node ({len(left)} wrong): {left[:5]}; "
                              f"operator: {op.log_tail(15)}")
        routed = time.monotonic()
        print(f"[scale] {SERVICES} services: created in {created - start:.1f} s, all running after "
              f"{running - start:.1f} s, all routed on {len(lab.lb_nodes)} LB nodes "
              f"{routed - running:.1f} s after the last was running", flush=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda name: docker_api.remove_service(client, name), NAMES))
        gone: list[str] = []

        def all_gone() -> bool:
            nonlocal gone
            gone = _wrong_answers(lab, dict.fromkeys(NAMES))
            return not gone

        wait_for(all_gone, timeout=60, interval=0.5,
                 what=lambda: f"every host gone from every LB node ({len(gone)} wrong): {gone[:5]}")
        removed = time.monotonic()

        engines = [lab.client(node) for node in lab.names]

        def no_containers() -> bool:
            return not any((c.name or "").startswith("scale-")
                           for engine in engines for c in engine.containers.list(all=True, ignore_removed=True))

        wait_for(no_containers, timeout=60, interval=1, what="no container of the test's services left")
        for engine in engines:
            engine.close()
        assert not [s for s in docker_api.services(client) if s["Spec"]["Name"] in NAMES]
        wait_for(op.converged, timeout=30, what=f"every proxy serves the current config: {op.log_tail(20)}")
        print(f"[scale] removed: every host 503 on every LB node {removed - routed:.1f} s after the removal "
              f"began; no container left after {time.monotonic() - routed:.1f} s", flush=True)
    client.close()

"""Several operators on one Swarm: exactly one leads, the others stand by and take over.

Deployed the seed's way (its TOML as a Swarm config, the operator as a Swarm service on a manager with
docker.sock mounted and 8080 published in host mode without a fixed port), twice: a second operator
service with the same configuration next to the seed's `interlock`, and then one service with
`--replicas 2`. Each operator's role is read from its own `/metrics` (`swarmgate_leader`), the lease
from Swarm; "nothing was written" is read from Docker's event stream over a measured window.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests import docker_api
from tests.lab import http
from tests.lab.cluster import REPO, Lab
from tests.lab.operator_fixture import (
    CHANNEL_SECRET,
    OWNED,
    PROXY,
    RunningOperator,
    answers_everywhere,
    clean_swarm,
    create_routed,
    operator_endpoints,
    running_upstreams,
    successful_passes,
)
from tests.lab.operator_fixture import _remove_when_unused as remove_when_unused
from tests.lab.test_seed_e2e import CONFIG, OPERATOR_CREATE, SEED_TOML, docker_cli, operator_containers
from tests.support import EventWindow, event_window, wait_for

pytestmark = pytest.mark.lab

SEED = "interlock"
SECOND = "interlock-standby"
LEASE = "swarmgate-leader"
HOLDER_LABEL = "swarmgate.leader.holder"
ROUTED = ("demo", "late", "later")
# The bar is 0 writes beyond the first convergence over 2 minutes: `make faults` holds that
# full window (bench/faults.md, the second-operator and extra-replicas rows). Here a shorter window
# keeps `make test` in its budget; it still spans ~40 of the leader's 1 s passes and several lease
# renewals of the standby's, which is where a fight between two operators would show.
QUIET_WINDOW_S = 40.0
_LEADER_SERIES = re.compile(r'^swarmgate_leader\{identity="([^"]+)"\} ([0-9.]+)$', re.M)
_WRITES_SERIES = re.compile(r'^swarmgate_docker_api_calls_total\{kind="write"\} ([0-9.]+)$', re.M)


def operator_create(name: str, *extra: str) -> list[str]:
    """The seed's `docker service create` for the operator, under another name or with more flags."""
    args = list(OPERATOR_CREATE)
    args[args.index("--name") + 1] = name
    return args[:2] + list(extra) + args[2:]


def scrape(address: str, port: int) -> str:
    return http.get(address, "/metrics", port=port, timeout=3).body.decode()


def roles(client: docker.DockerClient, services: tuple[str, ...]) -> dict[str, float]:
    """Per running operator task, its own `swarmgate_leader` value (1 leads, 0 stands by)."""
    out = {}
    for task_id, (address, port) in operator_endpoints(client, services).items():
        series = dict(_LEADER_SERIES.findall(scrape(address, port)))
        out[task_id] = float(series.get(task_id, "nan"))
    return out


def writes_counted(client: docker.DockerClient, services: tuple[str, ...]) -> dict[str, float]:
    """Per running operator task, the Docker writes it has counted (lease writes included)."""
    return {task_id: float(_WRITES_SERIES.findall(scrape(address, port))[0])
            for task_id, (address, port) in operator_endpoints(client, services).items()}


def one_leader(client: docker.DockerClient, services: tuple[str, ...], *, tasks: int) -> str | None:
    """The leading task, once `tasks` operators answer, exactly one says it leads, and the lease names it."""
    seen = roles(client, services)
    leaders = [t for t, v in seen.items() if v == 1.0]
    if len(seen) != tasks or len(leaders) != 1 or sorted(seen.values()) != [0.0] * (tasks - 1) + [1.0]:
        return None
    return leaders[0] if lease_holder(client) == leaders[0] else None


def lease_holder(client: docker.DockerClient) -> str | None:
    try:
        labels: dict[str, str] = docker_api.inspect_config(client, LEASE)["Spec"]["Labels"]
    except docker.errors.NotFound:
        return None
    return labels.get(HOLDER_LABEL)


def leader_status(client: docker.DockerClient, leader: str, services: tuple[str, ...]) -> dict[str, Any]:
    address, port = operator_endpoints(client, services)[leader]
    data: dict[str, Any] = json.loads(http.get(address, "/v1/status", port=port, timeout=3).body)
    return data


def converged(client: docker.DockerClient, services: tuple[str, ...], *, tasks: int) -> str | None:
    """The leader, once it leads alone and every proxy reports serving its current config."""
    leader = one_leader(client, services, tasks=tasks)
    if leader is None:
        return None
    cluster = leader_status(client, leader, services).get("clusters", {}).get("default")
    proxies = docker_api.running_tasks(client, PROXY)
    return leader if cluster and cluster.get("all_current") and len(proxies) >= 2 else None


def owned_writes(client: docker.DockerClient, window: EventWindow) -> list[str]:
    """Writes in the window to objects the operators own: the proxy service, its configs, the channel key,
    the lease."""
    owned_ids = {c.id for c in client.configs.list(filters=OWNED)}
    writes = []
    for e in window.writes():
        name = (e.get("Actor", {}).get("Attributes") or {}).get("name", "")
        if (name in (PROXY, LEASE, CHANNEL_SECRET) or name.startswith(f"{PROXY}.")
                or e.get("Actor", {}).get("ID") in owned_ids):
            writes.append(f"{e['Type']} {e['Action']} {name or e['Actor']['ID']}")
    return writes


def remove_operators(lab: Lab, client: docker.DockerClient) -> None:
    """The operators first, their tasks gone (so none re-creates what it owns), then everything else."""
    for name in (SEED, SECOND):
        for svc in client.services.list(filters={"name": name}):
            if svc.name == name:
                docker_api.remove(svc)
    wait_for(lambda: not operator_containers(lab, SEED) and not operator_containers(lab, SECOND),
             timeout=60, what="the operators' containers to stop")
    clean_swarm(client, services=ROUTED, lab=lab)  # also the lease: it is an owned config
    for cfg in client.configs.list(filters={"name": CONFIG}):
        if cfg.name == CONFIG:
            remove_when_unused(cfg.remove)


@pytest.fixture
def client(lab: Lab) -> Iterator[docker.DockerClient]:
    c = lab.manager_client()
    remove_operators(lab, c)
    try:
        yield c
    finally:
        try:
            remove_operators(lab, c)
        finally:
            c.close()


def deploy_routed(lab: Lab, client: docker.DockerClient, name: str) -> float:
    """A routed service the seed's way; seconds from `create` until every LB node routes it."""
    started = time.monotonic()
    create_routed(client, name, {"com.docker.lb.hosts": f"{name}.local", "com.docker.lb.port": "8080"})
    upstreams = wait_for(lambda: running_upstreams(client, name), timeout=60, what=f"{name} running")
    wait_for(lambda: answers_everywhere(lab, f"{name}.local", upstreams), timeout=90,
             what=f"{name}.local on every LB node")
    return time.monotonic() - started


def assert_quiet(client: docker.DockerClient, services: tuple[str, ...], leader: str, *, tasks: int,
                 seconds: float) -> dict[str, Any]:
    """Over `seconds` on a converged cluster, while every operator keeps making passes: always the same
    single leader, no owned write in Docker's event stream, no write counted by any operator, and the
    proxy service's version unchanged."""
    version = docker_api.inspect_service(client, PROXY)["Version"]["Index"]
    counted = writes_counted(client, services)
    passes = {t: successful_passes(a, p) for t, (a, p) in operator_endpoints(client, services).items()}
    leaders_seen = set()
    with event_window(client) as window:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            leaders_seen.add(one_leader(client, services, tasks=tasks))
            # A look every 5 s, and the window closes at its deadline, not up to 5 s after it.
            time.sleep(max(0.0, min(5.0, deadline - time.monotonic())))
    passes_made = {t: successful_passes(a, p) - passes[t]
                   for t, (a, p) in operator_endpoints(client, services).items()}
    writes = owned_writes(client, window)
    assert writes == [], f"owned objects written while the cluster was stable: {writes}"
    assert leaders_seen == {leader}, f"leadership moved on a stable cluster: {leaders_seen}"
    assert writes_counted(client, services) == counted
    assert docker_api.inspect_service(client, PROXY)["Version"]["Index"] == version
    # Every operator kept looking all along (the seed's PollInterval is 3 s): the quiet was not idleness.
    assert min(passes_made.values()) >= seconds / 3 / 2, passes_made
    others = [f"{e['Type']} {e['Action']} {(e.get('Actor', {}).get('Attributes') or {}).get('name', '')}"
              for e in window.events()]
    return {"window_s": round(seconds), "events_in_window": others, "owned_writes": len(writes),
            "passes_per_operator": sorted(passes_made.values()), "proxy_version": version}


def test_second_operator_service_stands_by_and_nothing_is_written(lab: Lab, client: docker.DockerClient) -> None:
    services = (SEED, SECOND)
    docker_cli(lab, "config", "create", CONFIG, "-", stdin=SEED_TOML)
    started = time.monotonic()
    docker_cli(lab, *operator_create(SEED, "--detach"))
    docker_cli(lab, *operator_create(SECOND, "--detach"))
    wait_for(lambda: client.services.list(filters={"name": PROXY}) or None, timeout=90, what=f"{PROXY}")
    docker_cli(lab, "service", "update", "--constraint-add", "node.labels.nodetype==loadbalancer", PROXY)
    routed_s = deploy_routed(lab, client, "demo")
    leader = wait_for(lambda: converged(client, services, tasks=2), timeout=90, what="one leader, converged")
    figures = {"deploy_to_converged_s": round(time.monotonic() - started, 1), "demo_routed_s": round(routed_s, 1)}

    # (a) a stable cluster: one leader all along, nothing written.
    figures |= assert_quiet(client, services, leader, tasks=2, seconds=QUIET_WINDOW_S)

    # (b) the leader's service scaled to 0: the standby takes over, and a new service gets routed.
    first = next(s for s in services if leader in {t["ID"] for t in docker_api.running_tasks(client, s)})
    other = next(s for s in services if s != first)
    gone = time.monotonic()
    docker_cli(lab, "service", "scale", "--detach", f"{first}=0")
    new_leader = wait_for(lambda: one_leader(client, (other,), tasks=1), timeout=30,
                          what="the standby to take over")
    figures["takeover_after_scale_to_0_s"] = round(time.monotonic() - gone, 1)
    figures["late_routed_after_takeover_s"] = round(deploy_routed(lab, client, "late"), 1)

    # The first service back: its new task stands by, and leadership does not move.
    docker_cli(lab, "service", "scale", "--detach", f"{first}=1")
    assert wait_for(lambda: one_leader(client, services, tasks=2), timeout=60, what="two operators") == new_leader

    # The now leading service removed: the first one's task takes over in turn.
    gone = time.monotonic()
    docker_cli(lab, "service", "rm", other)
    wait_for(lambda: one_leader(client, (first,), tasks=1), timeout=30, what="take-over after rm")
    figures["takeover_after_service_rm_s"] = round(time.monotonic() - gone, 1)
    figures["later_routed_after_takeover_s"] = round(deploy_routed(lab, client, "later"), 1)
    print(f"\nleader figures (two services): {json.dumps(figures, sort_keys=True)}")


def test_replicated_operator_service_has_one_leader_and_a_standby_that_takes_over(
        lab: Lab, client: docker.DockerClient) -> None:
    services = (SEED,)
    docker_cli(lab, "config", "create", CONFIG, "-", stdin=SEED_TOML)
    started = time.monotonic()
    docker_cli(lab, *operator_create(SEED, "--detach", "--replicas", "2"))
    routed_s = deploy_routed(lab, client, "demo")
    leader = wait_for(lambda: converged(client, services, tasks=2), timeout=90, what="one leader, converged")
    figures = {"deploy_to_converged_s": round(time.monotonic() - started, 1), "demo_routed_s": round(routed_s, 1)}
    figures |= assert_quiet(client, services, leader, tasks=2, seconds=QUIET_WINDOW_S / 4)

    # The leader's container killed on its node (a crash): the other replica takes over, and Swarm's
    # replacement task joins as a standby.
    (task,) = [t for t in docker_api.running_tasks(client, SEED) if t["ID"] == leader]
    node = next(n["Description"]["Hostname"] for n in client.api.nodes() if n["ID"] == task["NodeID"])
    engine = lab.client(node)
    try:
        killed = time.monotonic()
        engine.api.kill(task["Status"]["ContainerStatus"]["ContainerID"])
    finally:
        engine.close()
    def other_replica_leads() -> str | None:
        holder = lease_holder(client)
        return holder if holder not in (None, leader) and roles(client, services).get(holder) == 1.0 else None

    new_leader = wait_for(other_replica_leads, timeout=30, what="the other replica to take over")
    figures["takeover_after_kill_s"] = round(time.monotonic() - killed, 1)
    figures["late_routed_after_takeover_s"] = round(deploy_routed(lab, client, "late"), 1)
    assert wait_for(lambda: one_leader(client, services, tasks=2), timeout=60, what="replacement task") == new_leader
    print(f"\nleader figures (--replicas 2): {json.dumps(figures, sort_keys=True)}")


def role_of(op: RunningOperator) -> str | None:
    address, port = op.listen.rsplit(":", 1)
    doc: dict[str, Any] = json.loads(http.get(address, "/v1/leader", port=int(port), timeout=3).body)
    return str(doc["role"]) if doc.get("reason") != "no pass yet" else None


def test_swarmgate_run_processes_one_leads_renews_and_hands_over(lab: Lab, tmp_path: Path) -> None:
    client = lab.manager_client()
    clean_swarm(client, services=ROUTED, lab=lab)
    ops: list[RunningOperator] = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        ops.append(RunningOperator(lab, tmp_path / name, poll="3s"))
    a, b, c = ops
    figures: dict[str, Any] = {}
    try:
        a.start()
        b.start()
        roles_ab = wait_for(lambda: (lambda r: r if set(r) == {"leader", "standby"} else None)(
            [role_of(a), role_of(b)]), timeout=30, what="one leader, one standby")
        leader, standby = (a, b) if roles_ab[0] == "leader" else (b, a)
        routed_s = deploy_routed(lab, client, "demo")
        figures["demo_routed_s"] = round(routed_s, 1)
        # A process has nothing Swarm watches: it renews its lease, and those are the only writes.
        with event_window(client) as window:
            leader.wait_full_passes(8, timeout=60)
            standby.wait_full_passes(8, timeout=60)
        writes = owned_writes(client, window)
        seconds = (window.closed_ns or 0) / 1e9 - window.opened_ns / 1e9
        assert writes and set(writes) == {f"config update {LEASE}"}, writes
        figures["lease_renewals_per_minute"] = round(len(writes) * 60 / seconds, 1)
        # `swarmgate status` names the leader.
        status = subprocess.run([str(REPO / ".venv/bin/swarmgate"), "status", "-c", str(a.config_path)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert status.stdout.startswith("leader: process:"), status.stdout + status.stderr
        # kill -9: the standby takes over once the lease's version has not moved for the lease period.
        assert leader.proc is not None
        killed = time.monotonic()
        leader.proc.kill()
        wait_for(lambda: role_of(standby) == "leader", timeout=40, what="the standby to take over")
        figures["takeover_after_kill_9_s"] = round(time.monotonic() - killed, 1)
        figures["late_routed_after_takeover_s"] = round(deploy_routed(lab, client, "late"), 1)
        # SIGTERM: the leader hands the lease back, and a standby takes it at once.
        c.start()
        wait_for(lambda: role_of(c) == "standby", timeout=30, what="a third process to stand by")
        stopped = time.monotonic()
        assert standby.stop() == 0
        wait_for(lambda: role_of(c) == "leader", timeout=30, what="the third process to take over")
        figures["takeover_after_sigterm_s"] = round(time.monotonic() - stopped, 1)
        print(f"\nleader figures (swarmgate run processes): {json.dumps(figures, sort_keys=True)}")
    except BaseException:
        for op in ops:
            print(f"--- {op.log_path} (last lines) ---\n{op.log_tail(40)}")
        raise
    finally:
        for op in ops:
            op.stop()
        clean_swarm(client, services=ROUTED, lab=lab)
        client.close()

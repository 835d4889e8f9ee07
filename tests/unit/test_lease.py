"""Leader election from a snapshot: who leads, who stands by, and what is written (pure, no Docker).

Each case is a small Swarm (two managers running an operator task each, unless said otherwise), the
lease as the snapshot shows it, this operator's identity and memory, and the whole expected decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.edge.election import is_lease_event
from swarmgate.operator.planning.actions import RemoveConfig
from swarmgate.operator.planning.desired import DesiredState
from swarmgate.operator.planning.leadership import (
    LEASE_DATA,
    LEASE_NAME,
    LEASE_SECONDS,
    RENEW_SECONDS,
    Candidate,
    CreateLease,
    Decision,
    Memory,
    UpdateLease,
    after_write,
    decide,
    leader_summary,
    lease_labels,
    may_act,
    own_task,
    read_lease,
    release,
    standbys,
)
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.planning.retry import resync_seconds
from tests import factories as f

OPERATOR = f.service("interlock", host_ports=(8080,))
MINE = "task-mine"
OTHER = "task-other"
ME_AS_TASK = Candidate(process_id="process:mgr-0:7:aa", task_id=MINE)
ME_AS_PROCESS = Candidate(process_id="process:host:7:aa")
PEER_PROCESS = "process:host:8:bb"
LEASE_ID = f.swarm_config(LEASE_NAME, LEASE_DATA)["ID"]
T0 = 1000.0


def lease(holder: str, *, version: int = 50, renewals: int = 3) -> dict[str, Any]:
    doc = f.swarm_config(LEASE_NAME, LEASE_DATA, labels=lease_labels(holder, renewals))
    doc["Version"]["Index"] = version
    return doc


def swarm(*configs: dict[str, Any], mine: str = "running", mine_desired: str = "running", other: str = "running",
          other_desired: str = "running", other_node: str = "ready", with_other: bool = True) -> ObservedState:
    """Two managers, one operator task on each: ours on mgr-0, the other on mgr-1."""
    nodes = [f.node("mgr-0", "198.18.0.11", role="manager"),
             f.node("mgr-1", "198.18.0.12", role="manager", state=other_node)]
    tasks = [f.task(OPERATOR, "mgr-0", id=MINE, state=mine, desired=mine_desired, ports={8080: 30001})]
    if with_other:
        tasks.append(f.task(OPERATOR, "mgr-1", id=OTHER, slot=2, state=other, desired=other_desired,
                            ports={8080: 30002}))
    return ObservedState.from_api(services=[OPERATOR], tasks=tasks, nodes=nodes, configs=list(configs))


def take(holder: str, *, version: int = 50, renewals: int = 4) -> UpdateLease:
    return UpdateLease(LEASE_ID, version, lease_labels(holder, renewals), LEASE_DATA)


@dataclass(frozen=True)
class Case:
    observed: ObservedState
    me: Candidate
    expected: Decision
    memory: Memory = field(default_factory=Memory)
    now: float = T0


WATCHING = Memory(watched_version=50, watched_since=T0)

CASES = {
    "no-lease-creates-it": Case(
        swarm(), ME_AS_TASK,
        Decision("leader", "no lease", MINE, CreateLease(lease_labels(MINE, 0)),
                 Memory(renewed_at=T0, confirmed_at=T0))),
    "own-lease-as-task-writes-nothing": Case(
        swarm(lease(MINE)), ME_AS_TASK,
        Decision("leader", "own lease", MINE, None, Memory(watched_version=50, watched_since=T0, confirmed_at=T0))),
    "holder-task-running-stands-by": Case(
        swarm(lease(OTHER)), ME_AS_TASK, Decision("standby", "holder task running", OTHER, None, WATCHING)),
    "holder-task-stopping-is-taken-over": Case(
        swarm(lease(OTHER), other_desired="shutdown"), ME_AS_TASK,
        Decision("leader", "holder task running (desired shutdown)", MINE, take(MINE),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0))),
    "holder-task-failed-is-taken-over": Case(
        swarm(lease(OTHER), other="failed", other_desired="shutdown"), ME_AS_TASK,
        Decision("leader", "holder task failed (desired shutdown)", MINE, take(MINE),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0))),
    "holder-node-down-is-taken-over": Case(
        swarm(lease(OTHER), other_node="down"), ME_AS_TASK,
        Decision("leader", "holder node down", MINE, take(MINE),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0))),
    "holder-task-missing-is-taken-over": Case(
        swarm(lease(OTHER), with_other=False), ME_AS_TASK,
        Decision("leader", "holder task missing", MINE, take(MINE),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0))),
    "released-lease-is-taken": Case(
        swarm(lease("")), ME_AS_TASK,
        Decision("leader", "lease released", MINE, take(MINE),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0))),
    "own-task-stopping-steps-down-without-writing": Case(
        swarm(lease(MINE), mine_desired="shutdown"), ME_AS_TASK,
        Decision("standby", "own task running (desired shutdown)", MINE, None, WATCHING)),
    "own-task-not-running-yet-does-not-take-a-free-lease": Case(
        swarm(lease(""), mine="starting"), ME_AS_TASK,
        Decision("standby", "own task starting (desired running)", None, None, WATCHING)),
    "own-lease-taken-as-process-now-names-the-task": Case(
        swarm(lease(ME_AS_TASK.process_id)), ME_AS_TASK,
        Decision("leader", "own lease, now as a task", MINE, take(MINE),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0))),
    "process-holder-first-seen-starts-the-watch": Case(
        swarm(lease(PEER_PROCESS)), ME_AS_PROCESS,
        Decision("standby", "process holder renewing", PEER_PROCESS, None, WATCHING)),
    "process-holder-renewed-restarts-the-watch": Case(
        swarm(lease(PEER_PROCESS, version=61)), ME_AS_PROCESS,
        Decision("standby", "process holder renewing", PEER_PROCESS, None,
                 Memory(watched_version=61, watched_since=T0 + 30)),
        memory=WATCHING, now=T0 + 30),
    "process-holder-within-lease-is-left-alone": Case(
        swarm(lease(PEER_PROCESS)), ME_AS_PROCESS,
        Decision("standby", "process holder renewing", PEER_PROCESS, None, WATCHING),
        memory=WATCHING, now=T0 + LEASE_SECONDS - 0.1),
    "process-holder-stale-is-taken-over": Case(
        swarm(lease(PEER_PROCESS)), ME_AS_PROCESS,
        Decision("leader", "process holder stale", ME_AS_PROCESS.identity, take(ME_AS_PROCESS.identity),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0 + LEASE_SECONDS,
                        confirmed_at=T0 + LEASE_SECONDS)),
        memory=WATCHING, now=T0 + LEASE_SECONDS),
    "own-process-lease-renewed-when-due": Case(
        swarm(lease(ME_AS_PROCESS.identity)), ME_AS_PROCESS,
        Decision("leader", "own lease renewed", ME_AS_PROCESS.identity, take(ME_AS_PROCESS.identity),
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0 + RENEW_SECONDS,
                        confirmed_at=T0 + RENEW_SECONDS)),
        memory=Memory(watched_version=50, watched_since=T0, renewed_at=T0), now=T0 + RENEW_SECONDS),
    "own-process-lease-not-due-writes-nothing": Case(
        swarm(lease(ME_AS_PROCESS.identity)), ME_AS_PROCESS,
        Decision("leader", "own lease", ME_AS_PROCESS.identity, None,
                 Memory(watched_version=50, watched_since=T0, renewed_at=T0, confirmed_at=T0 + RENEW_SECONDS - 0.1)),
        memory=Memory(watched_version=50, watched_since=T0, renewed_at=T0), now=T0 + RENEW_SECONDS - 0.1),
    "config-of-that-name-not-ours-is-left-alone": Case(
        swarm(f.swarm_config(LEASE_NAME, b"someone else's")), ME_AS_TASK,
        Decision("standby", f"a config named {LEASE_NAME} is not managed by swarmgate", None, None, Memory())),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decide(case: Case) -> None:
    assert decide(case.observed, case.me, case.memory, now=case.now) == case.expected


def test_a_task_holder_writes_nothing_however_long_it_leads() -> None:
    memory = Memory()
    observed = swarm(lease(MINE))
    for second in range(0, 3600, 3):
        decision = decide(observed, ME_AS_TASK, memory, now=T0 + second)
        assert (decision.role, decision.write) == ("leader", None)
        memory = decision.memory


def test_lost_compare_and_swap_stands_by_at_once() -> None:
    won = decide(swarm(lease(OTHER), with_other=False), ME_AS_TASK, Memory(), now=T0)
    assert won.role == "leader" and won.write is not None
    assert after_write(won, ok=True) == won
    assert after_write(won, ok=False) == Decision(
        "standby", "lost the lease to another operator", None, None, Memory())


def test_lost_create_stands_by_at_once() -> None:
    created = decide(swarm(), ME_AS_TASK, Memory(), now=T0)
    assert after_write(created, ok=False).role == "standby"


def test_a_leader_whose_lease_was_taken_stands_by_on_its_next_pass() -> None:
    # It led as a task; the snapshot now names another holder (it took over while we looked away).
    decision = decide(swarm(lease(OTHER, version=70)), ME_AS_TASK, WATCHING, now=T0 + 1)
    assert (decision.role, decision.write, decision.holder) == ("standby", None, OTHER)


def test_two_candidates_taking_over_from_one_snapshot_write_the_same_version() -> None:
    # Both CAS against version 50: Swarm accepts exactly one of them.
    observed = swarm(lease("process:gone:1:cc"))
    peer = Candidate(process_id=PEER_PROCESS)
    writes = [decide(observed, c, WATCHING, now=T0 + LEASE_SECONDS).write for c in (ME_AS_PROCESS, peer)]
    assert [(w.config_id, w.version) for w in writes if isinstance(w, UpdateLease)] == [(LEASE_ID, 50)] * 2


def test_release_hands_back_only_a_lease_this_operator_holds() -> None:
    held = read_lease(swarm(lease(ME_AS_PROCESS.identity)))
    assert release(held, ME_AS_PROCESS) == UpdateLease(LEASE_ID, 50, lease_labels("", 3), LEASE_DATA)
    assert release(read_lease(swarm(lease(PEER_PROCESS))), ME_AS_PROCESS) is None
    assert release(None, ME_AS_PROCESS) is None


def test_own_task_is_found_by_container_id_prefix() -> None:
    observed = swarm()
    container = next(t.container_id for t in observed.tasks if t.id == MINE)
    assert container is not None
    found = own_task(observed, container[:12])
    assert found is not None and found.id == MINE
    assert own_task(observed, None) is None
    assert own_task(observed, "0" * 12) is None


def test_garbage_collection_never_removes_the_lease() -> None:
    # The lease is an owned config that no service mounts; it survives only because clean-up keeps
    # the newest unused configs of each kind (and it is the only one of its kind).
    observed = swarm(lease(MINE))
    actions = plan(DesiredState(extensions=(), needs_channel=False), observed, published={})
    assert [a for a in actions if isinstance(a, RemoveConfig) and a.name == LEASE_NAME] == []


SUMMARIES = {
    "no-lease": (swarm(), {"holder": None, "kind": None, "alive": None, "detail": "no leader yet: no lease"}),
    "released": (swarm(lease("")), {"holder": None, "kind": None, "alive": None,
                                    "detail": "no leader: the lease is released"}),
    "task-holder-running": (swarm(lease(OTHER)), {
        "holder": OTHER, "kind": "task", "alive": True, "service": "interlock", "node": "mgr-1",
        "detail": f"task {OTHER} of service interlock on mgr-1: task running"}),
    "task-holder-node-down": (swarm(lease(OTHER), other_node="down"), {
        "holder": OTHER, "kind": "task", "alive": False, "service": "interlock", "node": "mgr-1",
        "detail": f"task {OTHER} of service interlock on mgr-1: node down"}),
    "process-holder": (swarm(lease(PEER_PROCESS, renewals=9)), {
        "holder": PEER_PROCESS, "kind": "process", "alive": None, "renewals": 9,
        "detail": f"{PEER_PROCESS} (a process: it renews the lease, 9 writes so far)"}),
}


@pytest.mark.parametrize(("observed", "expected"), SUMMARIES.values(), ids=SUMMARIES.keys())
def test_leader_summary(observed: ObservedState, expected: dict[str, Any]) -> None:
    assert leader_summary(observed) == expected


STANDBYS = {
    "task-holder": (swarm(lease(OTHER)), None, [{"task": MINE, "node": "mgr-0"}]),
    "holder-is-me": (swarm(lease(MINE)), None, [{"task": OTHER, "node": "mgr-1"}]),
    "standby-not-running": (swarm(lease(MINE), other="starting"), None, []),
    # A process holder has no service: this operator's own service's tasks stand by.
    "process-holder": (swarm(lease(PEER_PROCESS)), "container-of-mine", [{"task": MINE, "node": "mgr-0"},
                                                                         {"task": OTHER, "node": "mgr-1"}]),
    "no-lease-no-task": (swarm(), None, []),
}


@pytest.mark.parametrize(("observed", "container", "expected"), STANDBYS.values(), ids=STANDBYS.keys())
def test_standbys_are_the_other_running_tasks_of_the_operators_service(
        observed: ObservedState, container: str | None, expected: list[dict[str, str]]) -> None:
    if container is not None:  # the factory names each task's container after its service, slot and node
        container = next(t.container_id for t in observed.tasks if t.id == MINE)
    assert standbys(observed, container) == expected


@pytest.mark.parametrize(("event", "expected"), [
    # As Docker 20.10 sent them on the lab for a lease create, update and remove.
    pytest.param({"Type": "config", "Action": "update", "Actor": {"ID": "72zd129ke14z9t406rcvzpo6b",
                  "Attributes": {"name": LEASE_NAME}}}, True, id="lease-update"),
    pytest.param({"Type": "config", "Action": "create", "Actor": {"ID": "x",
                  "Attributes": {"name": "interlock-proxy.agent.0123456789ab"}}}, False, id="other-config"),
    pytest.param({"Type": "service", "Action": "update", "Actor": {"ID": "y", "Attributes": {"name": LEASE_NAME}}},
                 False, id="service-of-that-name"),
    pytest.param({"Type": "node", "Action": "update"}, False, id="no-actor"),
])
def test_only_the_lease_own_events_are_skipped(event: dict[str, Any], expected: bool) -> None:
    assert is_lease_event(event) is expected


@pytest.mark.parametrize(("poll", "in_swarm", "expected"), [
    pytest.param(3.0, True, 3.0, id="task-follows-poll-interval"),
    pytest.param(60.0, True, 60.0, id="task-long-poll-interval-kept"),
    pytest.param(3.0, False, RENEW_SECONDS / 2, id="process-twice-per-renewal"),
    pytest.param(1.0, False, 1.0, id="process-faster-poll-kept"),
])
def test_resync_seconds(poll: float, in_swarm: bool, expected: float) -> None:
    assert resync_seconds(poll, in_swarm=in_swarm) == expected


@pytest.mark.parametrize(("memory", "as_task", "now", "expected"), [
    pytest.param(Memory(confirmed_at=T0), True, T0 + LEASE_SECONDS - 0.1, True, id="task-holder-confirmed-lately"),
    # A task holder whose Docker API froze keeps its task, while a standby elsewhere takes over.
    pytest.param(Memory(confirmed_at=T0), True, T0 + LEASE_SECONDS, False, id="task-holder-unconfirmed-stops"),
    pytest.param(Memory(), True, T0, False, id="task-holder-never-confirmed"),
    pytest.param(Memory(renewed_at=T0, confirmed_at=T0), False, T0 + LEASE_SECONDS - 0.1, True,
                 id="process-within-lease"),
    pytest.param(Memory(renewed_at=T0, confirmed_at=T0 + 10), False, T0 + LEASE_SECONDS, False,
                 id="process-lease-ran-out"),
    pytest.param(Memory(), False, T0, False, id="process-never-renewed"),
])
def test_may_act_between_passes(memory: Memory, as_task: bool, now: float, expected: bool) -> None:
    assert may_act(memory, as_task=as_task, now=now) is expected

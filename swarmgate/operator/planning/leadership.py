"""Leader election: which of several operators may write, decided from one snapshot (pure).

Only what Swarm offers: the lease is one Swarm config, `swarmgate-leader`, whose labels name the
holder and count its renewals. Swarm configs accept label updates carrying the version index they
were read at, so an update is a compare-and-swap: of two operators that both try to take the lease
from the same snapshot, exactly one succeeds.

Who is alive is read from the snapshot rather than from writes wherever Swarm already knows it:

* A holder that runs as a Swarm task (the lease names its task ID) is alive while the snapshot shows
  that task desired and actually running on a ready node. It never renews, so a stable cluster sees
  no lease write at all, and a standby takes over on the first pass after the task stops or its node
  goes down.
* A holder that is a plain process (`process:<hostname>:<pid>:<random>`) has nothing Swarm watches,
  so it renews every `renew_seconds`. A standby presumes it dead once the lease's version has not
  changed for `lease_seconds`, measured on the standby's own monotonic clock from when it first saw
  that version: no two machines' clocks are ever compared.

`decide` holds no clock (the caller passes `now`) and writes nothing: it returns what to write
(`edge/election.py` writes it, in the pass's "elect" step), and `after_write` turns the write's
outcome into the role. A failed compare-and-swap means someone else
won: stand by at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import OWNER_LABEL, owned_labels
from swarmgate.models.swarm.tasks import Task

LEASE_NAME: Final = "swarmgate-leader"
KIND_LEADER: Final = "leader"
HOLDER_LABEL: Final = "swarmgate.leader.holder"
RENEWALS_LABEL: Final = "swarmgate.leader.renewals"
# The config's data never changes (Swarm refuses to change it): the lease lives in its labels.
LEASE_DATA: Final = b"swarmgate leader lease: the holder and its renewals are this config's labels\n"
PROCESS_PREFIX: Final = "process:"

LEASE_SECONDS: Final = 15.0
# A third of the lease: a process holder may miss two renewals before a standby takes over.
RENEW_SECONDS: Final = LEASE_SECONDS / 3

Role = Literal["leader", "standby"]


@dataclass(frozen=True)
class Lease:
    """The lease as the snapshot shows it."""

    config_id: str
    version: int
    holder: str  # "" once released
    renewals: int
    data: bytes

    @property
    def held_by_process(self) -> bool:
        return self.holder.startswith(PROCESS_PREFIX)


@dataclass(frozen=True)
class Candidate:
    """This operator: its process identity, and its Swarm task when it runs as one."""

    process_id: str
    task_id: str | None = None

    @property
    def identity(self) -> str:
        """What this operator writes as the holder: its task ID if Swarm runs it, else its process."""
        return self.task_id or self.process_id

    def holds(self, lease: Lease) -> bool:
        # Either name counts: a process that took the lease before its task showed up still holds it.
        return lease.holder != "" and lease.holder in (self.process_id, self.task_id)


@dataclass(frozen=True)
class Memory:
    """What a candidate remembers between passes (monotonic seconds of its own clock)."""

    watched_version: int | None = None  # the lease version first seen at `watched_since`
    watched_since: float = 0.0
    renewed_at: float | None = None  # when this candidate last wrote the lease
    # When a pass last confirmed this candidate holds the lease (its snapshot said so, or its write
    # succeeded). A leader acts only for a while after that: a frozen Docker API stops it.
    confirmed_at: float | None = None


@dataclass(frozen=True)
class CreateLease:
    labels: dict[str, str]
    data: bytes = LEASE_DATA


@dataclass(frozen=True)
class UpdateLease:
    """A compare-and-swap: applies only if the lease is still at `version`."""

    config_id: str
    version: int
    labels: dict[str, str]
    data: bytes


LeaseWrite = CreateLease | UpdateLease


@dataclass(frozen=True)
class Decision:
    """The role this pass, or the write that decides it (`role` is then the role if it succeeds)."""

    role: Role
    reason: str
    holder: str | None  # who holds the lease after this decision, as far as this candidate knows
    write: LeaseWrite | None
    memory: Memory


def lease_labels(holder: str, renewals: int) -> dict[str, str]:
    return {**owned_labels(kind=KIND_LEADER), HOLDER_LABEL: holder, RENEWALS_LABEL: str(renewals)}


def read_lease(observed: ObservedState) -> Lease | None:
    config = observed.config_named(LEASE_NAME)
    if config is None or OWNER_LABEL not in config.labels:
        return None
    renewals = config.labels.get(RENEWALS_LABEL, "0")
    return Lease(config_id=config.id, version=config.version, holder=config.labels.get(HOLDER_LABEL, ""),
                 renewals=int(renewals) if renewals.isdigit() else 0, data=config.data)


def own_task(observed: ObservedState, container_id: str | None) -> Task | None:
    """The Swarm task whose container is this process's, if it runs as one (as `operator_endpoint`)."""
    if not container_id:
        return None
    mine = [t for t in observed.tasks if t.container_id and t.container_id.startswith(container_id)]
    return next((t for t in mine if t.desired_state == "running"), mine[0] if mine else None)


def task_liveness(observed: ObservedState, task_id: str) -> tuple[bool, str]:
    """Whether Swarm still runs this task: desired and actual state running, on a ready node."""
    task = next((t for t in observed.tasks if t.id == task_id), None)
    if task is None:
        return False, "task missing"
    if task.desired_state != "running" or task.state != "running":
        return False, f"task {task.state} (desired {task.desired_state})"
    node = observed.node(task.node_id)
    if node is None or node.state != "ready":
        return False, f"node {node.state if node else 'missing'}"
    return True, "task running"


def _take(lease: Lease, me: Candidate, memory: Memory, reason: str, now: float) -> Decision:
    write = UpdateLease(lease.config_id, lease.version, lease_labels(me.identity, lease.renewals + 1), lease.data)
    return Decision("leader", reason, me.identity, write, replace(memory, renewed_at=now, confirmed_at=now))


def decide(
    observed: ObservedState,
    me: Candidate,
    memory: Memory,
    *,
    now: float,
    lease_seconds: float = LEASE_SECONDS,
    renew_seconds: float = RENEW_SECONDS,
) -> Decision:
    """This candidate's role for the pass that observed `observed`, at monotonic time `now`."""
    lease = read_lease(observed)
    if lease is None and observed.config_named(LEASE_NAME) is not None:
        # Owned objects only: a config of that name that is not ours is left alone, and nobody leads.
        return Decision("standby", f"a config named {LEASE_NAME} is not managed by swarmgate", None, None, memory)
    # Any change of version restarts the watch: the holder (or a new one) is evidently alive.
    if lease is not None and memory.watched_version != lease.version:
        memory = replace(memory, watched_version=lease.version, watched_since=now)
    if me.task_id is not None:
        alive, reason = task_liveness(observed, me.task_id)
        if not alive:
            # Swarm is stopping this task (or lost its node, or has not marked it running yet): the
            # others see the same and may take over, so leading now could overlap two writers.
            holder = (lease.holder or None) if lease is not None else None
            return Decision("standby", f"own {reason}", holder, None, memory)
    if lease is None:
        return Decision("leader", "no lease", me.identity, CreateLease(lease_labels(me.identity, 0)),
                        Memory(renewed_at=now, confirmed_at=now))
    if lease.holder == "":
        return _take(lease, me, memory, "lease released", now)
    if me.holds(lease):
        return _own(lease, me, memory, now=now, renew_seconds=renew_seconds)
    if not lease.held_by_process:
        alive, reason = task_liveness(observed, lease.holder)
        if alive:
            return Decision("standby", f"holder {reason}", lease.holder, None, memory)
        return _take(lease, me, memory, f"holder {reason}", now)
    if now - memory.watched_since >= lease_seconds:
        return _take(lease, me, memory, "process holder stale", now)
    return Decision("standby", "process holder renewing", lease.holder, None, memory)


def _own(lease: Lease, me: Candidate, memory: Memory, *, now: float, renew_seconds: float) -> Decision:
    memory = replace(memory, confirmed_at=now)
    if me.task_id is not None:
        if lease.holder == me.task_id:
            return Decision("leader", "own lease", me.identity, None, memory)
        # Taken as a process before the task was visible: name the task, and renewals stop.
        return _take(lease, me, memory, "own lease, now as a task", now)
    if memory.renewed_at is None or now - memory.renewed_at >= renew_seconds:
        return _take(lease, me, memory, "own lease renewed", now)
    return Decision("leader", "own lease", me.identity, None, memory)


def may_act(memory: Memory, *, as_task: bool, now: float, lease_seconds: float = LEASE_SECONDS) -> bool:
    """Whether a leader may still act between passes (its pusher asks before every push).

    Every leader must have confirmed its lease through a pass within `lease_seconds`: a task holder
    whose Docker API froze keeps its task (Swarm cannot tell it to stop) while a standby elsewhere
    takes over, so it stops pushing on its own. A process holder's lease also runs out a lease
    period after its last renewal: from then on a standby may have taken over. Either way the
    agents' fence refuses whatever an older term still sends."""
    confirmed = memory.confirmed_at is not None and now - memory.confirmed_at < lease_seconds
    return confirmed and (as_task or (memory.renewed_at is not None and now - memory.renewed_at < lease_seconds))


def after_write(decision: Decision, *, ok: bool) -> Decision:
    """The role once the decision's write is done: a lost compare-and-swap means stand by at once."""
    if decision.write is None or ok:
        return decision
    # Forget everything: whoever won wrote a new version, and the next pass starts watching that.
    return Decision("standby", "lost the lease to another operator", None, None, Memory())


def release(lease: Lease | None, me: Candidate) -> UpdateLease | None:
    """The write that hands the lease back on shutdown, so a standby need not wait for it to go stale."""
    if lease is None or not me.holds(lease):
        return None
    return UpdateLease(lease.config_id, lease.version, lease_labels("", lease.renewals), lease.data)


def leader_summary(observed: ObservedState) -> dict[str, Any]:
    """Who leads, as the snapshot tells it (for `swarmgate status`): the holder, what it is, where it
    runs and whether Swarm still runs it. A process holder's liveness is not in the snapshot."""
    lease = read_lease(observed)
    if lease is None or lease.holder == "":
        return {"holder": None, "kind": None, "alive": None,
                "detail": "no leader: the lease is released" if lease else "no leader yet: no lease"}
    if lease.held_by_process:
        return {"holder": lease.holder, "kind": "process", "alive": None, "renewals": lease.renewals,
                "detail": f"{lease.holder} (a process: it renews the lease, {lease.renewals} writes so far)"}
    alive, reason = task_liveness(observed, lease.holder)
    task = next((t for t in observed.tasks if t.id == lease.holder), None)
    node = observed.node(task.node_id) if task else None
    service = next((s.name for s in observed.services if task and s.id == task.service_id), None)
    where = f" of service {service} on {node.hostname or node.id}" if task and node else ""
    return {"holder": lease.holder, "kind": "task", "alive": alive, "service": service,
            "node": node.hostname if node else None, "detail": f"task {lease.holder}{where}: {reason}"}


def standbys(observed: ObservedState, container_id: str | None) -> list[dict[str, str]]:
    """The other running tasks of the operators' service (the lease holder's, else this process's
    own): the operators that stand by. A plain-process operator's peers are not in the snapshot."""
    lease = read_lease(observed)
    holder = lease.holder if lease else ""
    anchor = next((t for t in observed.tasks if holder and t.id == holder), None) or own_task(observed, container_id)
    if anchor is None:
        return []
    found = []
    for task in observed.tasks:
        if task.service_id == anchor.service_id and task.id != holder and task_liveness(observed, task.id)[0]:
            node = observed.node(task.node_id)
            found.append({"task": task.id, "node": (node.hostname or node.id) if node else task.node_id})
    return sorted(found, key=lambda s: s["task"])

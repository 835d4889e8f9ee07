"""Leader election at the Docker edge: the lease's create, compare-and-swap and release (I/O;
imports docker).

The decision is `planning.leadership.decide`; this module only carries out the one write it asks
for and turns the answer into a role. That write happens in the pass's "elect" step, right after
observe and before anything is decided about the proxies (`control/reconcile.py`).

Docker has no label-only update for configs and docker-py has no `update_config`, so the update
goes to `POST /configs/{id}/update?version=N` through the low-level client, with the whole spec
resent and the data unchanged (Swarm refuses any change of data). The version makes it a
compare-and-swap: Swarm answers "update out of sequence" when the lease moved since the snapshot,
and that operator has lost.

Lease writes are Docker writes: they go through the pass's `CallCounter` like every other write.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from swarmgate.errors import SwarmgateError, TemporaryError
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.edge.observe import CONNECTION_ERRORS, observe
from swarmgate.operator.planning.leadership import (
    HOLDER_LABEL,
    LEASE_NAME,
    Candidate,
    CreateLease,
    Decision,
    LeaseWrite,
    Memory,
    Role,
    after_write,
    decide,
    may_act,
    own_task,
    read_lease,
    release,
)
from swarmgate.operator.telemetry import metrics
from swarmgate.operator.telemetry.calls import CallCounter

log = logging.getLogger("swarmgate.leader")


def process_identity() -> str:
    """`process:<hostname>:<pid>:<random>`: unique even for a restarted process that got the same pid."""
    return f"process:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def write_lease(api: docker.APIClient, write: LeaseWrite, calls: CallCounter) -> bool:
    """Carry out one lease write; False when another operator got there first (or Swarm refused)."""
    try:
        if isinstance(write, CreateLease):
            calls.count("create_lease", write=True)
            api.create_config(LEASE_NAME, write.data, labels=write.labels)
        else:
            calls.count("update_lease", write=True)
            spec = {"Name": LEASE_NAME, "Labels": write.labels, "Data": base64.b64encode(write.data).decode()}
            # docker-py's own request helpers (what its public methods use); its stubs omit them.
            raw: Any = api
            response = raw._post_json(raw._url("/configs/{0}/update", write.config_id), data=spec,
                                      params={"version": write.version})
            raw._raise_for_status(response)
    except docker.errors.APIError as exc:
        # A name conflict (someone created it first), "update out of sequence" (someone updated it
        # since our snapshot) or a lease removed under us: in every case we do not hold it now.
        calls.failed()
        log.debug("lease write refused", extra={"error": str(exc.explanation or exc)})
        return False
    except CONNECTION_ERRORS as exc:
        # The write may or may not have landed: fail the pass, and the next one re-reads the lease.
        calls.failed()
        raise TemporaryError(f"docker unreachable while writing the lease: {type(exc).__name__}") from exc
    return True


@dataclass
class LeaderElection:
    """This operator's side of the election: its identity, memory between passes, and its role.

    `is_leader` is read by other threads (the endpoint, a pusher) between passes.
    """

    api: docker.APIClient
    calls: CallCounter
    container_id: str | None = None
    process_id: str = field(default_factory=process_identity)
    role: Role | None = None  # None until the first pass has decided
    last: Decision | None = None
    _memory: Memory = field(default_factory=Memory)
    _task_id: str | None = None
    # The leader's term: the lease's Swarm version while this operator holds it. Versions only grow
    # and every take-over is a compare-and-swap that makes a new one, so a newer leader always has a
    # greater term; every push carries it, and each proxy's agent refuses older terms.
    _term: int | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        metrics.LEADER.labels(identity=self.identity).set(0)
        for role in ("leader", "standby"):
            metrics.LEADER_TRANSITIONS_TOTAL.labels(to=role)

    @property
    def identity(self) -> str:
        return self.candidate.identity

    @property
    def candidate(self) -> Candidate:
        return Candidate(process_id=self.process_id, task_id=self._task_id)

    @property
    def is_leader(self) -> bool:
        return self.role == "leader" and may_act(self._memory, as_task=self._task_id is not None, now=self.clock())

    def term(self) -> int | None:
        """This operator's term while it may push (the pusher asks before every push), else None."""
        return self._term if self.is_leader else None

    def step(self, observed: ObservedState, *, now: float, reconcile_id: str = "-") -> Decision:
        """Decide this pass's role from the snapshot, write the lease if that is what deciding takes."""
        self._learn_task(observed)
        decision = decide(observed, self.candidate, self._memory, now=now)
        if decision.write is not None:
            try:
                ok = write_lease(self.api, decision.write, self.calls)
            except TemporaryError:
                # Whether the write landed is unknown: stand by until a pass can read the lease again.
                self._memory = Memory()
                self._become(Decision("standby", "lease write failed", None, None, self._memory), reconcile_id)
                raise
            decision = after_write(decision, ok=ok)
            self._term = self._written_term() if ok and decision.role == "leader" else None
        elif decision.role == "leader":
            lease = read_lease(observed)
            self._term = lease.version if lease is not None else None
        else:
            self._term = None
        self._memory = decision.memory
        self.last = decision
        self._become(decision, reconcile_id)
        return decision

    def _written_term(self) -> int | None:
        """The lease's version right after our own write, read back so a new leader can push at once
        (else only the next pass would show it). None when the read fails or names someone else."""
        try:
            self.calls.count("inspect_lease", write=False)
            raw: Any = self.api  # docker-py's stubs leave inspect_config untyped
            attrs = raw.inspect_config(LEASE_NAME)
        except (docker.errors.APIError, *CONNECTION_ERRORS):
            self.calls.failed()
            return None
        holder = ((attrs.get("Spec") or {}).get("Labels") or {}).get(HOLDER_LABEL)
        if holder != self.identity:
            return None
        return int((attrs.get("Version") or {}).get("Index") or 0) or None

    def release(self, observed: ObservedState) -> bool:
        """Hand the lease back (on shutdown) if this process holds it as a process; True if released.

        A task holder writes nothing: Swarm marks its task as stopping, which the standbys read."""
        self._learn_task(observed)
        if self._task_id is not None:
            return False
        write = release(read_lease(observed), self.candidate)
        released = write is not None and write_lease(self.api, write, self.calls)
        if released:
            self._become(Decision("standby", "released on shutdown", None, None, self._memory), "-")
        return released

    def release_on_exit(self) -> None:
        """`release`, reading the lease first; a failure only delays the take-over (the lease goes stale)."""
        try:
            if self.release(observe(self.api, self.calls)):
                log.info("lease released", extra={"identity": self.identity})
        except SwarmgateError as exc:
            log.warning("could not release the lease; a standby takes over when it goes stale",
                        extra={"error": str(exc)})

    def routes(self) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
        """The endpoint's `/v1/leader` route: this operator's role, identity and what it knows of the holder."""
        return {"/v1/leader": lambda: (200, "application/json", json.dumps(self.document()).encode() + b"\n")}

    def _learn_task(self, observed: ObservedState) -> None:
        task = own_task(observed, self.container_id)
        if task is not None and task.id != self._task_id:
            with contextlib.suppress(KeyError):  # the series of the identity it had until now
                metrics.LEADER.remove(self.identity)
            self._task_id = task.id
            metrics.LEADER.labels(identity=self.identity).set(int(self.is_leader))

    def _become(self, decision: Decision, reconcile_id: str) -> None:
        if decision.role == self.role:
            return
        self.role = decision.role
        metrics.LEADER.labels(identity=self.identity).set(int(self.is_leader))
        metrics.LEADER_TRANSITIONS_TOTAL.labels(to=decision.role).inc()
        log.info(f"now {decision.role}", extra={"reconcile_id": reconcile_id, "identity": self.identity,
                                                "holder": decision.holder or "-", "reason": decision.reason})

    def document(self) -> dict[str, Any]:
        """What `/v1/leader` serves: this operator's role and what it knows of the holder."""
        last = self.last
        return {"role": self.role or "standby", "identity": self.identity,
                "holder": last.holder if last else None, "reason": last.reason if last else "no pass yet"}


class _QuietStream:
    """An event stream without the lease's own events; `close()` closes the underlying stream."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self._stream:
            if not is_lease_event(event):
                yield event

    def close(self) -> None:
        self._stream.close()


class WithoutLeaseEvents:
    """A client whose `events()` skips the lease's own events, for the loop's event watcher.

    Every lease write fires a config event on every operator. A pass woken by it would only re-read
    what the lease says, and each wake-up also makes the loop poll fast for a while: renewals of a
    process holder would keep every operator busy. Roles are decided on each pass (resync) instead.
    """

    def __init__(self, api: docker.APIClient) -> None:
        self._api = api

    def events(self, **kwargs: Any) -> _QuietStream:
        return _QuietStream(self._api.events(**kwargs))


def is_lease_event(event: Any) -> bool:
    if not isinstance(event, dict) or event.get("Type") != "config":
        return False
    actor = event.get("Actor") or {}
    return bool((actor.get("Attributes") or {}).get("name") == LEASE_NAME)

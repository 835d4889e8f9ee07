"""One reconcile pass, in four steps: observe, elect, decide, apply.

* observe (edge, reads): the whole Swarm, never an event payload (level-triggered), with the host
  ports Swarm stopped listing recalled, and the channel keys its secrets name loaded.
* elect (edge, writes about the operator itself, before anything is decided about the proxies):
  the leader lease (`edge/election.py`), and the channel key's mount into the operator's own
  service. A standby goes on to decide, so its metrics, status and `plan` say what the leader does.
* decide (pure): `planning/decide.py`'s `decide_pass`, the function `plan`, `status`, `render` and
  `routes` call too.
* apply (edge, writes): the leader's actions, in order; a standby applies nothing.

A pass returns a `PassReport`, or raises `TemporaryError` (the loop backs off and retries) or
`TerminalError`.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from swarmgate.errors import TemporaryError
from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.port_memory import recall_ports
from swarmgate.models.swarm.ports import PortBinding
from swarmgate.operator.acme.worker import AcmeWorker
from swarmgate.operator.control.acme_wiring import (
    AcmeAccount,
    ChallengeGate,
    acme_status,
    challenges_served,
    lagging_extensions,
)
from swarmgate.operator.control.gc_pause import collection_paused
from swarmgate.operator.delivery.channel_holder import ChannelKeyHolder
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.status import rejections
from swarmgate.operator.delivery.survey import served_everywhere
from swarmgate.operator.edge.actions import Publisher, apply
from swarmgate.operator.edge.election import LeaderElection
from swarmgate.operator.edge.observe import Api, observe
from swarmgate.operator.planning.channel_mount import own_channel_mount
from swarmgate.operator.planning.decide import PassDecision, PassMemory, Reported, decide_pass
from swarmgate.operator.planning.desired import DesiredState
from swarmgate.operator.planning.leadership import own_task
from swarmgate.operator.planning.report import ApplyResult, PassReport
from swarmgate.operator.telemetry.acme_metrics import AcmeMetrics
from swarmgate.operator.telemetry.calls import CallCounter
from swarmgate.operator.telemetry.changes import ChangeLog
from swarmgate.operator.telemetry.holds import HoldReport
from swarmgate.renderers.validate import NginxGate

log = logging.getLogger("swarmgate.reconcile")

Problem = tuple[str, str, str]  # kind, extension or service, reason


@dataclass
class Reconciler:
    config: Config
    api: Api
    publisher: Publisher
    own_container_id: str | None = None
    calls: CallCounter = field(default_factory=CallCounter)
    # The channel key this operator holds (None: a reconciler that never pushes, e.g. in tests).
    channel: ChannelKeyHolder | None = None
    # What the proxies said through the delivery channel: their rejections set the TLS secrets those
    # messages blame aside (one service never stalls the others). None: nobody reports.
    proxies: ProxyState | None = None
    # Who may write when several operators run. Without one, this reconciler always leads.
    election: LeaderElection | None = None
    clock: Callable[[], float] = time.monotonic
    # nginx -t before anything is published (once per distinct config), and the holds, said once each.
    nginx_gate: NginxGate = field(default_factory=NginxGate)
    holds: HoldReport = field(default_factory=HoldReport)
    # What `decide_pass` carries between passes (unusable secrets, attempted specs, published digests).
    memory: PassMemory = field(default_factory=PassMemory)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # What was last reported as not routed, so each problem is logged when it appears, not every pass.
    _problems: ChangeLog[Problem] = field(default_factory=ChangeLog)
    # Host ports of running tasks as last seen, for the tasks Swarm later lists without them
    # (models/swarm/port_memory.py); and which tasks were recalled, so each is logged once.
    _task_ports: Mapping[str, tuple[PortBinding, ...]] = field(default_factory=dict)
    _recalled: ChangeLog[str] = field(default_factory=ChangeLog)
    # ACME: the worker that places orders off this thread (None: no ACMEDirectory), the wall clock
    # certificates are judged by, the account derived from the channel key, and what /v1/status shows.
    acme: AcmeWorker | None = None
    wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)
    acme_account: AcmeAccount = field(default_factory=AcmeAccount)
    acme_metrics: AcmeMetrics = field(default_factory=AcmeMetrics)
    acme_findings: dict[str, Any] = field(default_factory=dict)
    _deferred: ChangeLog[str] = field(default_factory=ChangeLog)
    # Orders wait for the proxies to serve the challenge location, for a bounded time.
    acme_gate: ChallengeGate = field(default_factory=ChallengeGate)
    _overdue: ChangeLog[str] = field(default_factory=ChangeLog)
    _next_due: datetime.datetime | None = None

    def reconcile_once(self) -> PassReport:
        with collection_paused():
            return self._reconcile_once()

    def _reconcile_once(self) -> PassReport:
        reconcile_id = f"r{next(self._ids)}"
        started = self.clock()  # the snapshot is at least this fresh: what confirms a lease
        observed = self._observe(reconcile_id)
        leading = self._elect(observed, now=started, reconcile_id=reconcile_id)
        outcomes = self.acme.drain() if self.acme is not None else []
        AcmeMetrics.count(outcomes)
        key = self.acme_account.key(self.config, self.channel)
        reported = self._reported()
        now = self.wall_clock()
        decision = decide_pass(self.config, observed, reported=reported, memory=self.memory,
                               verdict=self.nginx_gate.verdict, now=now,
                               acme_thumbprint=self.acme_account.thumbprint, outcomes=outcomes)
        self.memory = decision.memory
        AcmeMetrics.deferred(len(decision.acme.deferred))
        self._next_due = min((t for t in (decision.acme.next_due, decision.memory.undelivered.next_retry)
                              if t is not None), default=None)
        self.acme_findings = acme_status(self.config, decision, now,
                                         self.acme.busy() if self.acme is not None else frozenset(),
                                         self.acme_account.thumbprint)
        self._report_problems(decision.desired, reconcile_id)
        self.holds.record(decision.actions, [e.name for e in decision.desired.extensions], reconcile_id=reconcile_id)
        if not leading:
            return PassReport(reconcile_id, decision.actions, ApplyResult(), decision.desired, observed,
                              decision.routes_digest)
        result = apply(self.api, decision.actions, observed=observed, publisher=self.publisher, calls=self.calls,
                       reconcile_id=reconcile_id, keys=self.channel)
        self.memory = self.memory.after_apply(result.done)
        self._retry_undelivered(decision, reconcile_id)
        self._order(decision, reported, key, now=now, reconcile_id=reconcile_id)
        if result.error is not None:
            raise TemporaryError(f"{result.error} ({len(result.done)} done, {len(result.not_done)} not done)")
        return PassReport(reconcile_id, decision.actions, result, decision.desired, observed, decision.routes_digest)

    def _order(self, decision: PassDecision, reported: Reported, key: Any, *, now: datetime.datetime,
               reconcile_id: str) -> None:
        """The leader hands due orders to the worker, once every proxy serves the config that answers
        the challenges (before that, the CA would find no answer and the host would back off). What
        the worker queues is written in the budget's ledger."""
        deferred = self._deferred.update(("budget",) if decision.acme.deferred else ())
        if deferred.appeared:
            log.warning("ACME order budget spent; orders wait", extra={
                "reconcile_id": reconcile_id, "hosts": ",".join(decision.acme.deferred[:5]),
                "waiting": len(decision.acme.deferred), "per_hour": self.config.acme_orders_per_hour})
        elif deferred.ended:
            log.info("ACME order budget available again", extra={"reconcile_id": reconcile_id})
        if self.acme is None or key is None:
            return
        served = challenges_served(decision.desired, reported, pushed=self.proxies is not None)
        gate = self.acme_gate.check(pending=bool(decision.acme.orders), served=served, now=self.clock())
        if self._overdue.update(("overdue",) if gate == "overdue" else ()).appeared:
            log.warning("ordering ACME certificates although some proxies do not serve the challenge location yet; "
                        "an order the CA validates through one of them fails and backs off", extra={
                            "reconcile_id": reconcile_id, "waited_s": self.acme_gate.wait,
                            "extensions": ",".join(lagging_extensions(decision.desired, reported))})
        if gate != "wait":
            queued = self.acme.submit(decision.acme.orders, key)
            self.memory = replace(self.memory, acme=self.memory.acme.placed(len(queued), now))

    def requeue_after(self) -> float | None:
        """Seconds until the last pass's next time: an ACME renewal, the end of a backoff or of the
        order budget's hour, an undelivered secret's retry. The loop runs a pass then even if Docker
        says nothing and the resync (`PollInterval`) is longer."""
        if self._next_due is None:
            return None
        return max((self._next_due - self.wall_clock()).total_seconds(), 0.0)

    def _retry_undelivered(self, decision: PassDecision, reconcile_id: str) -> None:
        """Certificate secrets set aside as undelivered a while ago are tried again: the proxies that
        rejected the config naming them may be pushed it once more (planning/undelivered.py)."""
        retrying = decision.memory.undelivered.retrying_now
        if not retrying or self.proxies is None:
            return
        log.info("trying undelivered certificate secrets again", extra={
            "reconcile_id": reconcile_id, "secrets": ",".join(sorted(i[:12] for i in retrying))})
        for ext in decision.desired.extensions:
            if any(secret_id in ext.rendered.text for secret_id in retrying):
                self.proxies.allow_repush(ext.rendered.digest)

    def _observe(self, reconcile_id: str) -> ObservedState:
        recalled = recall_ports(observe(self.api, self.calls), self._task_ports)
        self._task_ports = recalled.memory
        for task_id in sorted(self._recalled.update(recalled.recalled).appeared):
            log.warning("Swarm lists a running task without its host ports; routing it on the ports seen "
                        "before", extra={"reconcile_id": reconcile_id, "task": task_id})
        if self.channel is not None:
            self.channel.sync(recalled.observed)
        return recalled.observed

    def _elect(self, observed: ObservedState, *, now: float, reconcile_id: str) -> bool:
        """Whether this operator leads this pass, decided from this very snapshot before anything is
        decided about the proxies (the lease write, if any, happens here); then the channel key's
        mount into the operator's own service, leader or standby (each needs the key to lead)."""
        leading = self.election is None or self.election.step(
            observed, now=now, reconcile_id=reconcile_id).role == "leader"
        self._mount_channel_key(observed, reconcile_id)
        return leading

    def _reported(self) -> Reported:
        if self.proxies is None:
            return Reported()
        return Reported(rejections=rejections(self.proxies), served=served_everywhere(self.proxies))

    def _report_problems(self, desired: DesiredState, reconcile_id: str) -> None:
        # The same findings offline `routes` prints, logged once each when they appear.
        problems = self._problems.update(
            [("extension", e.name, e.problem) for e in desired.extensions if e.problem]
            + [("service", a.service, a.reason) for e in desired.extensions for a in e.route_table.set_aside]
            + [("unclaimed", a.service, a.reason) for a in desired.unclaimed]
            + [("notice", e.name, n) for e in desired.extensions for n in e.route_table.notices])
        for kind, name, reason in sorted(problems.appeared):
            extra = {"reconcile_id": reconcile_id, "reason": reason}
            if kind == "extension":
                log.warning("extension not managed", extra={**extra, "extension": name})
            elif kind == "notice":
                log.info("route notice", extra={**extra, "extension": name})
            elif kind == "unclaimed":
                log.info("service not routed by any extension", extra={**extra, "service": name})
            else:
                log.info("service set aside", extra={**extra, "service": name})

    def _mount_channel_key(self, observed: ObservedState, reconcile_id: str) -> None:
        """An operator that runs as a Swarm task and does not mount the channel key's secret yet
        mounts it into its own service. Swarm then restarts this operator once; the proxies are not
        touched."""
        if self.channel is None:
            return
        mount = own_channel_mount(observed, own_task(observed, self.own_container_id))
        if mount is None:
            return
        result = apply(self.api, [mount], observed=observed, publisher=self.publisher, calls=self.calls,
                       reconcile_id=reconcile_id)
        if result.error is not None:
            raise TemporaryError(result.error)

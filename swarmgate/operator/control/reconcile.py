"""One reconcile pass: observe, compute desired state, plan, apply (I/O through observe/actions).

A pass takes no event payload: it always re-reads the whole Swarm (level-triggered). It returns a
`PassReport`, or raises `TemporaryError` (the loop backs off and retries) or `TerminalError`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from swarmgate.errors import TemporaryError
from swarmgate.models.routing.tls_secrets import still_present, unusable_secret_ids
from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.port_memory import recall_ports
from swarmgate.models.swarm.ports import PortBinding
from swarmgate.operator.delivery.channel_holder import ChannelKeyHolder
from swarmgate.operator.edge.actions import Publisher, apply
from swarmgate.operator.edge.lease import LeaderElection
from swarmgate.operator.edge.observe import Api, observe
from swarmgate.operator.planning.actions import PublishProxyConfig
from swarmgate.operator.planning.channel_mount import own_channel_mount
from swarmgate.operator.planning.desired import DesiredState, compute_desired
from swarmgate.operator.planning.holds import record_attempts, rejected_extensions
from swarmgate.operator.planning.lease import own_task
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.planning.report import ApplyResult, PassReport
from swarmgate.operator.telemetry.calls import CallCounter
from swarmgate.operator.telemetry.holds import HoldReport
from swarmgate.renderers.validate import NginxGate

log = logging.getLogger("swarmgate.reconcile")


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (reference counting still frees)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()




def learn_unusable_secrets(config: Config, observed: ObservedState, known: Iterable[str],
                           rejections: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Secret IDs a proxy's nginx could not load, kept while the secret exists (a secret's content
    never changes under its ID, so the verdict stays true; a new secret gets a new ID)."""
    learnt = set(known)
    for extension, message in rejections:
        ext = config.extensions.get(extension)
        proxy = observed.service_named(ext.proxy_service_name) if ext is not None else None
        if proxy is not None:
            learnt |= unusable_secret_ids(message, proxy.spec)
    return still_present(learnt, observed.secrets)


@dataclass
class Reconciler:
    config: Config
    api: Api
    publisher: Publisher
    own_container_id: str | None = None
    calls: CallCounter = field(default_factory=CallCounter)
    # The channel key this operator holds (None: a reconciler that never pushes, e.g. in tests).
    channel: ChannelKeyHolder | None = None
    _published: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # What was last reported as not routed, so each problem is logged when it appears, not every pass.
    _reported: frozenset[tuple[str, str, str]] = frozenset()
    # Who may write when several operators run. Without one, this reconciler always leads.
    election: LeaderElection | None = None
    clock: Callable[[], float] = time.monotonic
    # nginx -t before anything is published (once per distinct config), the spec digests this
    # operator wrote (what Swarm may roll back from), and the holds, said once each.
    nginx_gate: NginxGate = field(default_factory=NginxGate)
    holds: HoldReport = field(default_factory=HoldReport)
    _attempted: dict[str, str] = field(default_factory=dict)
    # (extension, nginx -t message) of each proxy rejection the delivery channel has seen; the TLS
    # secrets those messages blame set their services aside (one service never stalls the others).
    rejections: Callable[[], Iterable[tuple[str, str]]] = lambda: ()
    unusable_secrets: frozenset[str] = frozenset()
    # Host ports of running tasks as last seen, for the tasks Swarm later lists without them
    # (models/swarm/port_memory.py); and which tasks were last recalled, so each is logged once.
    _task_ports: Mapping[str, tuple[PortBinding, ...]] = field(default_factory=dict)
    _recalled: tuple[str, ...] = ()

    def reconcile_once(self) -> PassReport:
        # A pass builds hundreds of thousands of objects (10,000 services: the API's JSON, then the
        # snapshot, routes and config) and makes no reference cycle. Python's cyclic collector would
        # walk everything alive again and again while they are built: at 10,000 services that was
        # more than half of the pass, the JSON parse included. It runs again once the pass is done.
        with collection_paused():
            return self._reconcile_once()

    def _reconcile_once(self) -> PassReport:
        reconcile_id = f"r{next(self._ids)}"
        started = self.clock()  # the snapshot is at least this fresh: what confirms a lease
        observed = self._recall_forgotten_ports(observe(self.api, self.calls), reconcile_id)
        if self.channel is not None:
            self.channel.sync(observed)
        # Decided from this very snapshot, before anything is applied: a standby still computes what
        # the leader would do (metrics, status, plan) but applies nothing.
        leading = self.election is None or self.election.step(
            observed, now=started, reconcile_id=reconcile_id).role == "leader"
        self._mount_channel_key(observed, reconcile_id)
        self.unusable_secrets = learn_unusable_secrets(self.config, observed, self.unusable_secrets,
                                                       self.rejections())
        desired = compute_desired(self.config, observed, unusable_secrets=self.unusable_secrets)
        self._report_problems(desired, reconcile_id)
        actions = plan(desired, observed, published=self._published,
                       rejected=rejected_extensions(desired, self.nginx_gate.verdict), attempted=self._attempted)
        self.holds.record(actions, [e.name for e in desired.extensions], reconcile_id=reconcile_id)
        if not leading:
            digest = hashlib.sha256("".join(e.rendered.digest for e in desired.extensions).encode()).hexdigest()
            return PassReport(reconcile_id, actions, ApplyResult(), desired, observed, digest)
        result = apply(self.api, actions, observed=observed, publisher=self.publisher, calls=self.calls,
                       reconcile_id=reconcile_id, keys=self.channel)
        for action in result.done:
            if isinstance(action, PublishProxyConfig):
                self._published[action.extension] = action.digest
        record_attempts(result.done, self._attempted)
        if result.error is not None:
            raise TemporaryError(f"{result.error} ({len(result.done)} done, {len(result.not_done)} not done)")
        digest = hashlib.sha256("".join(e.rendered.digest for e in desired.extensions).encode()).hexdigest()
        return PassReport(reconcile_id, actions, result, desired, observed, digest)

    def _recall_forgotten_ports(self, observed: ObservedState, reconcile_id: str) -> ObservedState:
        recalled = recall_ports(observed, self._task_ports)
        self._task_ports = recalled.memory
        for task_id in sorted(set(recalled.recalled) - set(self._recalled)):
            log.warning("Swarm lists a running task without its host ports; routing it on the ports seen "
                        "before", extra={"reconcile_id": reconcile_id, "task": task_id})
        self._recalled = recalled.recalled
        return recalled.observed

    def _report_problems(self, desired: DesiredState, reconcile_id: str) -> None:
        # The same findings offline `routes` prints, logged once each when they appear.
        problems = frozenset(
            [("extension", e.name, e.problem) for e in desired.extensions if e.problem]
            + [("service", a.service, a.reason) for e in desired.extensions for a in e.route_table.set_aside]
            + [("unclaimed", a.service, a.reason) for a in desired.unclaimed]
            + [("notice", e.name, n) for e in desired.extensions for n in e.route_table.notices])
        for kind, name, reason in sorted(problems - self._reported):
            extra = {"reconcile_id": reconcile_id, "reason": reason}
            if kind == "extension":
                log.warning("extension not managed", extra={**extra, "extension": name})
            elif kind == "notice":
                log.info("route notice", extra={**extra, "extension": name})
            elif kind == "unclaimed":
                log.info("service not routed by any extension", extra={**extra, "service": name})
            else:
                log.info("service set aside", extra={**extra, "service": name})
        self._reported = problems

    def _mount_channel_key(self, observed: ObservedState, reconcile_id: str) -> None:
        """An operator that runs as a Swarm task and does not mount the channel key's secret yet
        mounts it into its own service, leader or standby (each needs the key to lead). Swarm then
        restarts this operator once; the proxies are not touched."""
        if self.channel is None:
            return
        mount = own_channel_mount(observed, own_task(observed, self.own_container_id))
        if mount is None:
            return
        result = apply(self.api, [mount], observed=observed, publisher=self.publisher, calls=self.calls,
                       reconcile_id=reconcile_id)
        if result.error is not None:
            raise TemporaryError(result.error)

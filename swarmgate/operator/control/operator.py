"""The running operator: one object that owns every part and their wiring (I/O, through its parts).

The model is controller-runtime's manager. `Operator.build` makes the parts in the order their
dependencies ask for: the Docker client, the election (whose term signs every push), the channel
keys, the proxy store and its pusher, the reconciler, the endpoint's routes. `run` starts the
endpoint, the event watcher and the pusher, runs passes until `request_stop`, then stops them and
hands the lease back. The last pass's route findings and routes digest are plain attributes, read
by the endpoint's `/v1/status` (and the status page at `/`, which shows that document) and by the
next pass.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from swarmgate.models.settings.config import Config
from swarmgate.operator.acme.worker import AcmeWorker
from swarmgate.operator.control.endpoint import EndpointServer, PageRoute, Route, json_answer, serve
from swarmgate.operator.control.gc_pause import collection_paused
from swarmgate.operator.control.loop import DockerHealth, Wakeup, run_loop, watch_events
from swarmgate.operator.control.readiness import Readiness, max_pass_age
from swarmgate.operator.control.reconcile import Reconciler
from swarmgate.operator.delivery.channel_holder import ChannelKeyHolder
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.pusher import Pusher
from swarmgate.operator.delivery.status import status_document, with_traffic
from swarmgate.operator.delivery.status_page import render_status_page
from swarmgate.operator.delivery.traffic_ledger import TrafficLedger
from swarmgate.operator.delivery.traffic_poller import TrafficPoller
from swarmgate.operator.delivery.wire import proxy_targets
from swarmgate.operator.edge.election import LeaderElection, WithoutLeaseEvents
from swarmgate.operator.edge.observe import Api, connect, own_container_id
from swarmgate.operator.planning.desired import DesiredState
from swarmgate.operator.planning.findings import route_findings
from swarmgate.operator.planning.leadership import leader_summary, standbys
from swarmgate.operator.planning.retry import Outcome, Schedule, resync_seconds
from swarmgate.operator.planning.route_rows import route_rows
from swarmgate.operator.telemetry import metrics, observability
from swarmgate.operator.telemetry.calls import CallCounter
from swarmgate.operator.telemetry.holds import HoldReport

log = logging.getLogger("swarmgate")


@dataclass
class Operator:
    config: Config
    api: Api
    # Only the leader writes and pushes; the others stand by (planning/leadership.py).
    election: LeaderElection
    store: ProxyState
    # Pushes run off the reconcile thread, each signed with the leader's term.
    pusher: Pusher
    reconciler: Reconciler
    # The leader reads each proxy's traffic counters into the ledger, which /metrics exports.
    traffic: TrafficPoller
    ledger: TrafficLedger
    readiness: Readiness
    schedule: Schedule
    pass_metrics: observability.PassMetrics = field(default_factory=observability.PassMetrics)
    wakeup: Wakeup = field(default_factory=Wakeup)
    stopping: threading.Event = field(default_factory=threading.Event)
    # The last pass's route findings (for /v1/status) and routes digest (a change means "look again").
    findings: dict[str, Any] = field(default_factory=dict)
    last_digest: str | None = None
    # The last pass's desired state, and its route rows: made when /v1/status or the page first asks
    # after a pass, not by every pass (at 10,000 services they cost a few percent of one).
    desired: DesiredState | None = None
    _rows: tuple[DesiredState | None, list[dict[str, Any]]] = (None, [])

    @classmethod
    def build(cls, config: Config, channel_key_path: Path) -> Operator:
        api = connect(config)
        container_id = own_container_id()
        calls = CallCounter()
        election = LeaderElection(api=api, calls=calls, container_id=container_id)
        # A task reads its key from the mounted secret; a plain process keeps the key it creates.
        channel = ChannelKeyHolder(channel_key_path, writable=container_id is None)
        store = ProxyState(on_converged=observability.record_convergence, on_reload=observability.count_reload)
        holds = HoldReport()
        pusher = Pusher(store, channel.keyring, term=election.term, on_forged=holds.forged_status)
        ledger = TrafficLedger()
        metrics.ROUTE_TRAFFIC.attach(ledger)
        wakeup = Wakeup()
        # Orders run off the reconcile thread; each outcome wakes a pass up to store or note it.
        acme = None if config.acme_directory is None else AcmeWorker(
            config.acme_directory, email=config.acme_email, ca_bundle=config.acme_ca_bundle, on_outcome=wakeup.set)
        reconciler = Reconciler(config=config, api=api, publisher=pusher, own_container_id=container_id, calls=calls,
                                channel=channel, proxies=store, election=election, holds=holds, acme=acme)
        observability.init_series()
        return cls(
            config=config, api=api, election=election, store=store, pusher=pusher, reconciler=reconciler,
            traffic=TrafficPoller(ledger, pusher.leading_clients), ledger=ledger,
            readiness=Readiness(DockerHealth(), holds, max_pass_age(config.poll_interval)),
            schedule=Schedule(resync=resync_seconds(config.poll_interval, in_swarm=container_id is not None)),
            wakeup=wakeup,
        )

    def routes(self) -> dict[str, Route]:
        """The endpoint's routes (it adds `/healthz`)."""
        return {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, metrics.exposition()),
            # /readyz lists what is held (a config nginx rejects, a spec Swarm rolled back).
            "/readyz": self.readiness.answer,
            "/v1/status": lambda: json_answer(self.status()),
            **self.election.routes(),
        }

    def status(self) -> dict[str, Any]:
        """`/v1/status`: what the proxies say, the last pass's routes and findings, this operator now."""
        return {**status_document(self.store), **self.findings,
                "routes": with_traffic(self.route_rows(), self.ledger.recent(), self.ledger.measured()),
                "operator": {**self.election.document(), **self.readiness.document()}}

    def route_rows(self) -> list[dict[str, Any]]:
        made_for, rows = self._rows
        if self.desired is not None and made_for is not self.desired:
            desired = self.desired
            with collection_paused():  # 10,000 rows: the collector would walk the whole snapshot meanwhile
                rows = route_rows(desired)
            self._rows = (desired, rows)
        return rows

    def pages(self) -> dict[str, PageRoute]:
        """The status page, unless `StatusPage = false`: `/v1/status` as HTML (`delivery/status_page.py`)."""
        if not self.config.status_page:
            return {}
        return {"/": lambda query: (200, "text/html; charset=utf-8", render_status_page(
            self.status(), query, dashboard_url=self.config.grafana_dashboard_url).encode())}

    def run(self) -> None:
        """Serve, watch and reconcile until `request_stop`; a pass is never cut half way."""
        page_addr = self.config.status_page_addr
        servers = [serve(self.config.listen_addr, self.routes(), None if page_addr else self.pages())]
        if page_addr and self.pages():
            servers.append(serve(page_addr, {}, self.pages()))
        threading.Thread(target=watch_events, args=(self._events_client, self.wakeup, self.stopping),
                         name="events", daemon=True).start()
        log.info("swarmgate running", extra={"listen": self.config.listen_addr,
                                             "extensions": ",".join(self.config.extensions)})
        self.pusher.start()
        self.traffic.start()
        if self.reconciler.acme is not None:
            self.reconciler.acme.start()
        try:
            run_loop(self.run_pass, schedule=self.schedule, wakeup=self.wakeup, stop=self.stopping,
                     health=self.readiness.health, on_outcome=self._on_outcome,
                     requeue_after=self.reconciler.requeue_after)
        finally:
            self._shut_down(servers)

    def request_stop(self) -> None:
        """Stop after the pass under way (safe from a signal handler)."""
        self.stopping.set()
        self.wakeup.set()

    def run_pass(self) -> bool:
        report = self.reconciler.reconcile_once()
        # The tables first: a task the pusher tracks is read with the names of its own pass.
        self.traffic.follow({ext.name: ext.route_table for ext in report.desired.extensions})
        self.pusher.track(proxy_targets(self.config, report.observed))
        # "Changed" also when the routes moved without a Docker write (a task came or went): tasks
        # elsewhere may still be moving, so the loop keeps looking quickly for a while.
        changed = report.wrote or report.routes_digest != self.last_digest
        self.last_digest = report.routes_digest
        self.pass_metrics.record_pass_state(report, self.store)
        self.reconciler.acme_metrics.record(report, self.reconciler.memory.acme)
        self.findings = {**route_findings(report.desired, report.observed),
                         "leader": {**leader_summary(report.observed),
                                    "standbys": standbys(report.observed, self.reconciler.own_container_id)},
                         **self.reconciler.acme_findings}
        self.desired = report.desired
        return changed

    def _on_outcome(self, outcome: Outcome, seconds: float) -> None:
        metrics.record_pass(outcome, seconds)
        self.pass_metrics.sync_calls(self.reconciler.calls)

    def _events_client(self) -> WithoutLeaseEvents:
        # Its own connection: the event stream blocks, and the passes must not wait behind it.
        return WithoutLeaseEvents(connect(self.config))

    def _shut_down(self, servers: list[EndpointServer]) -> None:
        self.traffic.stop()
        self.pusher.stop()
        if self.reconciler.acme is not None:
            self.reconciler.acme.stop()
        self.election.release_on_exit()
        for server in servers:
            server.shutdown()

"""Pass reports, agent reports and API call counts → metric values (no I/O: in-memory registry only).

Every series a dashboard panel reads exists from the first pass on, at 0 where nothing happened
yet (reason kinds, reload results, reconcile results): Prometheus' advice for labelled metrics, and
what keeps a panel from going blank on a healthy Swarm. Label values stay bounded: extension
names from the config, reason *kinds* (never the free-text reason), and the proxy tasks that are
live now (series of proxies that are gone are removed).
"""

from __future__ import annotations

import contextlib
import threading
import typing

from prometheus_client import Gauge

# Why a service is set aside, as a closed set: defined once, where the reasons are made.
from swarmgate.models.routing.labels import REASON_KINDS
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.planning.actions import Action, NoOp
from swarmgate.operator.planning.report import PassReport
from swarmgate.operator.telemetry import metrics
from swarmgate.operator.telemetry.calls import CallCounter

DIGEST_SHOWN = 12

ACTION_KINDS: tuple[str, ...] = tuple(
    sorted(t.__name__ for t in typing.get_args(Action) if t is not NoOp))


def init_series() -> None:
    """Series that must read 0 rather than be absent before anything happened."""
    for result in ("success", "error", "requeue"):
        metrics.RECONCILE_TOTAL.labels(result=result)
    for kind in ACTION_KINDS:
        for result in ("ok", "error"):
            metrics.ACTIONS_TOTAL.labels(kind=kind, result=result)
    for kind in ("read", "write"):
        metrics.DOCKER_CALLS_TOTAL.labels(kind=kind)


class PassMetrics:
    """Turns each pass and the proxy store into gauge values; remembers which series it set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proxy_series: dict[str, tuple[str, str, str, str]] = {}  # task → (ext, task, node, digest)
        self._calls_seen = CallCounter()

    def record_pass_state(self, report: PassReport, store: ProxyState) -> None:
        for ext in report.desired.extensions:
            table = ext.route_table
            metrics.ROUTES.labels(extension=ext.name).set(len(table.hosts))
            upstreams = {(u.address, u.port) for pool in table.pools for u in pool.upstreams}
            metrics.UPSTREAMS.labels(extension=ext.name).set(len(upstreams))
            counts = dict.fromkeys(REASON_KINDS, 0)
            for aside in table.set_aside:
                counts[aside.kind if aside.kind in counts else "other"] += 1
            for kind, count in counts.items():
                metrics.SET_ASIDE.labels(extension=ext.name, reason=kind).set(count)
            for result in ("ok", "error"):
                metrics.RELOADS_TOTAL.labels(extension=ext.name, result=result)
            metrics.CONVERGENCE_SECONDS.labels(extension=ext.name)
        for ext in report.desired.extensions:
            metrics.ROUTE_NOTICES.labels(extension=ext.name).set(len(ext.route_table.notices))
        metrics.ROUTE_NOTICES.labels(extension="").set(len(report.desired.notices))
        # Services no extension serves belong to no extension: counted under extension="".
        metrics.SET_ASIDE.labels(extension="", reason="no_extension").set(len(report.desired.unclaimed))
        store.retain_tasks(proxy_tasks(report))
        self.record_proxies(store, [e.name for e in report.desired.extensions])

    def record_proxies(self, store: ProxyState, extensions: list[str]) -> None:
        """Per live proxy task: is it current, which digest it serves; gone tasks lose their series."""
        series: dict[str, tuple[str, str, str, str]] = {}
        for ext in sorted(set(extensions) | set(store.clusters())):
            current = store.current(ext)
            behind = 0
            for proxy in store.proxies(ext):
                is_current = current is not None and proxy.served_digest == current.digest
                behind += not is_current
                node = proxy.hostname or proxy.node
                metrics.PROXY_CURRENT.labels(extension=ext, task=proxy.task, node=node).set(int(is_current))
                served = proxy.served_digest[:DIGEST_SHOWN] or "bootstrap"
                series[proxy.task] = (ext, proxy.task, node, served)
            metrics.PROXIES_NOT_CURRENT.labels(extension=ext).set(behind)
        with self._lock:
            for task, old in self._proxy_series.items():
                new = series.get(task)
                if new == old:
                    continue
                if new is None or new[:3] != old[:3]:
                    _remove(metrics.PROXY_CURRENT, *old[:3])
                _remove(metrics.PROXY_SERVED, *old)
            for labels in series.values():
                metrics.PROXY_SERVED.labels(*labels).set(1)
            self._proxy_series = series

    def sync_calls(self, calls: CallCounter) -> None:
        """Add the calls made since the last sync (the reconciler's counter only grows)."""
        with self._lock:
            seen = self._calls_seen
            metrics.DOCKER_CALLS_TOTAL.labels(kind="read").inc(max(0, calls.reads - seen.reads))
            metrics.DOCKER_CALLS_TOTAL.labels(kind="write").inc(max(0, calls.writes - seen.writes))
            metrics.DOCKER_ERRORS_TOTAL.inc(max(0, calls.errors - seen.errors))
            self._calls_seen = CallCounter(reads=calls.reads, writes=calls.writes, errors=calls.errors)


def proxy_tasks(report: PassReport) -> dict[str, list[str]]:
    """Per extension, the proxy tasks the Swarm still means to run; the store forgets any other.

    An extension whose proxy service is not in the snapshot yet (created by this very pass) expects
    no task so far, which keeps it from counting as converged before its tasks exist."""
    out: dict[str, list[str]] = {}
    for ext in report.desired.extensions:
        if not ext.proxy_spec:
            continue
        service = report.observed.service_named(str(ext.proxy_spec["Name"]))
        tasks = report.observed.tasks_of(service.id) if service is not None else ()
        out[ext.name] = [t.id for t in tasks if t.desired_state == "running"]
    return out


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set, or already removed
        metric.remove(*labels)


def record_convergence(extension: str, seconds: float) -> None:
    metrics.CONVERGENCE_SECONDS.labels(extension=extension).observe(max(0.0, seconds))


def count_reload(extension: str, ok: bool) -> None:
    metrics.RELOADS_TOTAL.labels(extension=extension, result="ok" if ok else "error").inc()

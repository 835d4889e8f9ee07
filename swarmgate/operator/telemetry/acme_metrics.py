"""The ACME series: each served certificate's expiry, orders by result, failures in a row per host."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from swarmgate.operator.planning.acme_plan import AcmeState, Outcome, issued_certs
from swarmgate.operator.planning.report import PassReport
from swarmgate.operator.telemetry import metrics

RESULTS = ("issued", "failed")


class AcmeMetrics:
    """Sets the series of the hosts served now, and removes those of hosts no longer served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: set[tuple[str, str]] = set()
        self._failing: set[str] = set()
        for result in RESULTS:
            metrics.ACME_ORDERS_TOTAL.labels(result=result)

    @staticmethod
    def count(outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            metrics.ACME_ORDERS_TOTAL.labels(result="issued" if outcome.issued is not None else "failed").inc()

    @staticmethod
    def deferred(count: int) -> None:
        metrics.ACME_ORDERS_DEFERRED.set(count)

    def record(self, report: PassReport, state: AcmeState) -> None:
        by_secret = {c.secret_name: c for c in issued_certs(report.observed)}
        expiry: dict[tuple[str, str], float] = {}
        for ext in report.desired.extensions:
            for host in ext.route_table.hosts:
                cert = by_secret.get(host.tls.cert or "") if host.tls is not None else None
                if cert is not None:
                    expiry[(ext.name, host.host)] = cert.not_after.timestamp()
        failing = {host: f.count for host, f in state.memory.failures.items()}
        with self._lock:
            for gone in self._expiry - set(expiry):
                metrics.CERTIFICATE_EXPIRY.remove(*gone)
            for (ext_name, host_name), when in expiry.items():
                metrics.CERTIFICATE_EXPIRY.labels(extension=ext_name, host=host_name).set(when)
            for host_name in self._failing - set(failing):
                metrics.ACME_FAILURES.labels(host=host_name).set(0)
            for host_name, count in failing.items():
                metrics.ACME_FAILURES.labels(host=host_name).set(count)
            self._expiry, self._failing = set(expiry), set(failing)

"""Per-route traffic as Prometheus metrics: a custom collector over the traffic ledger (no I/O).

The ledger (`delivery/traffic_ledger.py`) holds each proxy task's counters; every scrape turns them
into families: requests by status class, request and upstream time histograms (the proxies count per
bucket; Prometheus wants cumulative buckets), and bytes. Label values are bounded: the extension, the
route's host and path and its service as the route table names them (never a request's Host), the
status class, and the proxy task, for the tasks that run now. Every family is exposed even empty, so
the dashboard and the rules name declared metrics only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from swarmgate.operator.delivery.traffic_file import BUCKETS
from swarmgate.operator.delivery.traffic_ledger import TrafficLedger

ROUTE_LABELS = ["extension", "host", "path", "service", "proxy"]
_LE = [repr(float(b)) for b in BUCKETS] + ["+Inf"]  # "1.0", as prometheus_client writes its own


class TrafficCollector:
    """Registered once (`metrics.ROUTE_TRAFFIC`); exports the ledger `attach` gives it (none before)."""

    def __init__(self) -> None:
        self._ledger: TrafficLedger | None = None

    def attach(self, ledger: TrafficLedger | None) -> None:
        self._ledger = ledger

    def describe(self) -> Iterable[Metric]:
        return list(_families())

    def collect(self) -> Iterator[Metric]:
        requests, duration, upstream, sent, received = _families()
        for proxy, (extension, host, path, service), c in self._ledger.series() if self._ledger else ():
            labels = [extension, host, path, service, proxy]
            for code, count in sorted(c.requests.items()):
                requests.add_metric([extension, host, path, service, code, proxy], count)
            sent.add_metric(labels, c.bytes_sent)
            received.add_metric(labels, c.bytes_received)
            if sum(c.request_buckets):
                duration.add_metric(labels, _cumulative(c.request_buckets), c.request_sum)
            if c.upstream_buckets is not None:
                upstream.add_metric(labels, _cumulative(c.upstream_buckets), c.upstream_sum)
        yield from (requests, duration, upstream, sent, received)


def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, HistogramMetricFamily,
                         CounterMetricFamily, CounterMetricFamily]:
    return (
        CounterMetricFamily(
            "swarmgate_route_requests", "Requests the proxies served, per route, service, status class and "
            "proxy task (service \"-\": no upstream was used).",
            labels=["extension", "host", "path", "service", "code", "proxy"]),
        HistogramMetricFamily(
            "swarmgate_route_request_duration_seconds", "Time from a request's first byte to its response's "
            "last (nginx's $request_time), per route, service and proxy task.", labels=ROUTE_LABELS),
        HistogramMetricFamily(
            "swarmgate_route_upstream_duration_seconds", "Time the upstream took to answer "
            "(nginx's $upstream_response_time, the last upstream tried), per route, service and proxy task.",
            labels=ROUTE_LABELS),
        CounterMetricFamily(
            "swarmgate_route_response_bytes", "Bytes the proxies sent to clients, per route, service and "
            "proxy task.", labels=ROUTE_LABELS),
        CounterMetricFamily(
            "swarmgate_route_request_bytes", "Bytes the proxies received from clients (request line, headers "
            "and body), per route, service and proxy task.", labels=ROUTE_LABELS),
    )


def _cumulative(buckets: list[int]) -> list[tuple[str, float]]:
    return list(zip(_LE, (float(n) for n in accumulate(buckets)), strict=True))

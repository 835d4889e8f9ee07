"""Per-route traffic as Prometheus metrics: a custom collector over the traffic ledger (no I/O).

The ledger (`delivery/traffic_ledger.py`) holds each proxy task's counters; every scrape turns them
into families: requests by status class, request and upstream time histograms (the proxies count per
bucket; Prometheus wants cumulative buckets), and bytes. Label values are bounded: the extension, the
route's host and path and its service as the route table names them (never a request's Host), the
status class, and the proxy task, for the tasks that run now. Every family is exposed even empty, so
the dashboard and the rules name declared metrics only.

At 10,000 busy routes a proxy task has about 300,000 samples, and prometheus_client's exposition
(which validates and escapes every label of every sample) takes seconds for them. So `/metrics`
writes these families itself (`exposition`: the same text, each series' labels escaped once, and
kept until the ledger changes), while `collect` gives the same families as prometheus_client objects
(the tests compare both).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from swarmgate.operator.delivery.traffic_file import BUCKETS
from swarmgate.operator.delivery.traffic_ledger import RouteCounters, SeriesId, TrafficLedger

ROUTE_LABELS = ["extension", "host", "path", "service", "proxy"]
_LE = [repr(float(b)) for b in BUCKETS] + ["+Inf"]  # "1.0", as prometheus_client writes its own


class TrafficCollector:
    """Declared once (`metrics.ROUTE_TRAFFIC`); exports the ledger `attach` gives it (none before)."""

    def __init__(self) -> None:
        self._ledger: TrafficLedger | None = None
        self._text: tuple[int, bytes] = (-1, b"")  # (ledger version, exposition)
        self._lock = threading.Lock()

    def attach(self, ledger: TrafficLedger | None) -> None:
        with self._lock:
            self._ledger = ledger
            self._text = (-1, b"")

    def exposition(self) -> bytes:
        """The families in Prometheus's text format, as `generate_latest` would write `collect()`."""
        with self._lock:
            ledger = self._ledger
            version = ledger.version if ledger is not None else 0
            if self._text[0] == version:
                return self._text[1]
            text = _write(ledger.series() if ledger is not None else [])
            self._text = (version, text)
            return text

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


def _write(series: list[tuple[str, SeriesId, RouteCounters]]) -> bytes:
    requests, durations, upstreams, sent, received = (f.name for f in _families())
    out: dict[str, list[str]] = {name: [] for name in (requests, durations, upstreams, sent, received)}
    for proxy, (extension, host, path, service), c in series:
        labels = (f'extension="{_escape(extension)}",host="{_escape(host)}",path="{_escape(path)}",'
                  f'service="{_escape(service)}"')
        own = f'{labels},proxy="{_escape(proxy)}"'
        for code, count in sorted(c.requests.items()):
            out[requests].append(f'{requests}_total{{{labels},code="{code}",proxy="{_escape(proxy)}"}} {count}.0\n')
        out[sent].append(f"{sent}_total{{{own}}} {c.bytes_sent}.0\n")
        out[received].append(f"{received}_total{{{own}}} {c.bytes_received}.0\n")
        if sum(c.request_buckets):
            out[durations].append(_histogram(durations, own, c.request_buckets, c.request_sum))
        if c.upstream_buckets is not None:
            out[upstreams].append(_histogram(upstreams, own, c.upstream_buckets, c.upstream_sum))
    text = []
    for family in _families():
        kind = "counter" if isinstance(family, CounterMetricFamily) else "histogram"
        shown = family.name + ("_total" if kind == "counter" else "")
        help_text = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        text.append(f"# HELP {shown} {help_text}\n# TYPE {shown} {kind}\n")
        text.extend(out[family.name])
    return "".join(text).encode()


def _histogram(name: str, labels: str, buckets: list[int], total: float) -> str:
    lines = [f'{name}_bucket{{{labels},le="{le}"}} {n}.0\n' for le, n in zip(_LE, accumulate(buckets), strict=True)]
    return "".join(lines) + f"{name}_count{{{labels}}} {sum(buckets)}.0\n{name}_sum{{{labels}}} {float(total)!r}\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

"""Per-route traffic counters of every proxy task, as the operator exports them (in memory, thread-safe).

The traffic files the leader reads from the proxies (`traffic_file.py`) are cumulative per EPOCH and
count per KEY and upstream address. The ledger turns each new file into *increments* (the difference
from the previous file of the same EPOCH, or the whole file after a new EPOCH) and adds them to the
series named by the route table now (`planning/traffic_names.py`). Hence the exported counters only
grow, whatever happens under them: a route or task that leaves the table sends its next increments
to another series instead of shrinking one, and an aggregator that restarts (a new EPOCH) costs no
reset. What a restarted aggregator had not written yet is lost (the agent says how much at most).

Each proxy task keeps its own series (label `proxy`): a replaced task is a new series, which
Prometheus understands. `retain` drops the series of tasks that no longer run, `clear` all of them
(a standby exports none). Besides the totals, the ledger keeps each task's last interval (between
two files of one EPOCH, measured by their UPTIME) for the status page's requests/s, 5xx ratio and p99.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from swarmgate.operator.delivery.traffic_file import BUCKETS, CountLine, HistogramLine, TrafficFile
from swarmgate.operator.planning.traffic_names import TrafficNames

RouteId = tuple[str, str, str]  # extension, host, path
SeriesId = tuple[str, str, str, str]  # extension, host, path, service
_NO_BUCKETS = (0,) * (len(BUCKETS) + 1)


@dataclass
class RouteCounters:
    """One route and service of one proxy task: cumulative since this operator first read the task."""

    requests: dict[str, int] = field(default_factory=dict)  # status class → requests
    bytes_sent: int = 0
    bytes_received: int = 0
    request_buckets: list[int] = field(default_factory=lambda: list(_NO_BUCKETS))
    request_sum: float = 0.0
    upstream_buckets: list[int] | None = None  # None until a request used an upstream
    upstream_sum: float = 0.0

    def copy(self) -> RouteCounters:
        return RouteCounters(dict(self.requests), self.bytes_sent, self.bytes_received, list(self.request_buckets),
                             self.request_sum, None if self.upstream_buckets is None else list(self.upstream_buckets),
                             self.upstream_sum)


@dataclass
class _Interval:
    """One route's increments over one task's last interval."""

    requests: int = 0
    errors: int = 0  # 5xx
    buckets: list[int] = field(default_factory=lambda: list(_NO_BUCKETS))


@dataclass
class _Proxy:
    extension: str
    epoch: str = ""
    uptime: float = 0.0
    # The last file's lines, by what they count: the next file's increments are taken against them.
    counts: dict[tuple[str, str, str], CountLine] = field(default_factory=dict)
    histograms: dict[tuple[str, str, str], HistogramLine] = field(default_factory=dict)
    series: dict[SeriesId, RouteCounters] = field(default_factory=dict)
    interval: dict[RouteId, _Interval] = field(default_factory=dict)
    seconds: float = 0.0  # the last interval's length; 0 before the second file of an EPOCH


@dataclass(frozen=True)
class RouteTraffic:
    """One route over the proxies' last intervals: what the status page shows."""

    requests_per_second: float
    ratio_5xx: float | None  # None without requests
    p99_seconds: float | None  # an estimate from the buckets, as Prometheus's histogram_quantile makes it


class TrafficLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proxies: dict[str, _Proxy] = {}
        self.version = 0  # grows with every change of the counters or the tasks kept (the scrape's cache)

    def record(self, extension: str, traffic: TrafficFile, names: TrafficNames) -> None:
        """Add what this file counts beyond the task's previous one (the whole file after a new EPOCH)."""
        with self._lock:
            proxy = self._proxies.get(traffic.task)
            if proxy is None or proxy.extension != extension:
                proxy = self._proxies[traffic.task] = _Proxy(extension)
            same_epoch = proxy.epoch == traffic.epoch
            advanced = same_epoch and traffic.uptime > proxy.uptime
            # Written again within the same UPTIME (or read twice): only what changed counts, and the
            # last interval stays what it was.
            interval: dict[RouteId, _Interval] | None = {} if advanced else None
            if not same_epoch:
                proxy.counts, proxy.histograms = {}, {}
            if _add(proxy, traffic, names=names, interval=interval):
                self.version += 1
            if advanced or not same_epoch:
                proxy.interval = interval or {}
                proxy.seconds = traffic.uptime - proxy.uptime if advanced else 0.0
            proxy.epoch, proxy.uptime = traffic.epoch, max(traffic.uptime, proxy.uptime if same_epoch else 0.0)

    def retain(self, tasks: Iterable[str]) -> None:
        """Forget every task but these (the proxy tasks that run now)."""
        keep = set(tasks)
        with self._lock:
            for task in [t for t in self._proxies if t not in keep]:
                del self._proxies[task]
                self.version += 1

    def clear(self) -> None:
        with self._lock:
            if self._proxies:
                self.version += 1
            self._proxies.clear()

    def series(self) -> list[tuple[str, SeriesId, RouteCounters]]:
        """(proxy task, series, its counters: a copy) of every task, sorted."""
        with self._lock:
            return [(task, sid, counters.copy()) for task, proxy in sorted(self._proxies.items())
                    for sid, counters in sorted(proxy.series.items())]

    def measured(self) -> set[str]:
        """The extensions with at least one task's interval: their routes not in `recent` had no requests."""
        with self._lock:
            return {p.extension for p in self._proxies.values() if p.seconds > 0}

    def recent(self) -> dict[RouteId, RouteTraffic]:
        """Per route, over each task's last interval: requests/s (summed over the tasks), 5xx ratio, p99."""
        rates: dict[RouteId, float] = {}
        totals: dict[RouteId, _Interval] = {}
        with self._lock:
            for proxy in self._proxies.values():
                if proxy.seconds <= 0:
                    continue
                for route, seen in proxy.interval.items():
                    rates[route] = rates.get(route, 0.0) + seen.requests / proxy.seconds
                    total = totals.setdefault(route, _Interval())
                    total.requests += seen.requests
                    total.errors += seen.errors
                    total.buckets = [a + b for a, b in zip(total.buckets, seen.buckets, strict=True)]
        return {route: RouteTraffic(rates[route], t.errors / t.requests if t.requests else None,
                                    quantile(0.99, t.buckets))
                for route, t in sorted(totals.items())}


def _add(proxy: _Proxy, traffic: TrafficFile, *, names: TrafficNames,
         interval: dict[RouteId, _Interval] | None) -> bool:
    """Add the file's increments over `proxy`'s last lines (none after a new EPOCH) to the series its
    names say, and to `interval`; keep its lines for the next file. Whether any counter grew."""
    grew = False
    for c in traffic.counts:
        ident = (c.key, c.upstream, c.code)
        old = proxy.counts.get(ident)
        if old == c:
            continue  # most lines of a large table do not change between two reads
        proxy.counts[ident] = c
        delta = (c.requests, c.bytes_sent, c.bytes_received)
        if old is not None and old.requests <= c.requests and old.bytes_sent <= c.bytes_sent \
                and old.bytes_received <= c.bytes_received:
            delta = (c.requests - old.requests, c.bytes_sent - old.bytes_sent, c.bytes_received - old.bytes_received)
        grew = True
        host, path = names.route(c.key)
        counters = proxy.series.setdefault((proxy.extension, host, path, names.service(c.upstream)), RouteCounters())
        counters.requests[c.code] = counters.requests.get(c.code, 0) + delta[0]
        counters.bytes_sent += delta[1]
        counters.bytes_received += delta[2]
        if interval is not None:
            seen = interval.setdefault((proxy.extension, host, path), _Interval())
            seen.requests += delta[0]
            seen.errors += delta[0] if c.code == "5xx" else 0
    for h in traffic.histograms:
        ident = (h.key, h.upstream, h.kind)
        previous = proxy.histograms.get(ident)
        if previous == h:
            continue
        proxy.histograms[ident] = h
        buckets, total = h.buckets, h.total
        if previous is not None and all(a <= b for a, b in zip(previous.buckets, h.buckets, strict=True)):
            buckets = tuple(b - a for a, b in zip(previous.buckets, h.buckets, strict=True))
            total = max(0.0, h.total - previous.total)
        grew = True
        host, path = names.route(h.key)
        counters = proxy.series.setdefault((proxy.extension, host, path, names.service(h.upstream)), RouteCounters())
        if h.kind == "request":
            counters.request_buckets = [a + b for a, b in zip(counters.request_buckets, buckets, strict=True)]
            counters.request_sum += total
            if interval is not None:
                seen = interval.setdefault((proxy.extension, host, path), _Interval())
                seen.buckets = [a + b for a, b in zip(seen.buckets, buckets, strict=True)]
        else:
            counters.upstream_buckets = [a + b for a, b in zip(counters.upstream_buckets or _NO_BUCKETS, buckets,
                                                               strict=True)]
            counters.upstream_sum += total
    return grew


def quantile(q: float, buckets: list[int] | tuple[int, ...]) -> float | None:
    """The q-quantile of non-cumulative bucket counts (upper bounds `BUCKETS`, then +Inf), interpolated
    within its bucket as Prometheus's `histogram_quantile` does; the highest finite bound when it
    falls in +Inf; None without observations."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(buckets):
        if count and below + count >= rank:
            if index == len(BUCKETS):
                return BUCKETS[-1]
            lower = BUCKETS[index - 1] if index else 0.0
            return lower + (BUCKETS[index] - lower) * (rank - below) / count
        below += count
    return BUCKETS[-1]

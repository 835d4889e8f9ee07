"""Reads every proxy task's traffic counters into the ledger (network I/O: HTTPS to the proxies).

Only the leader reads them, through the clients the pusher uses (same channel, same pinning, the key
generation each task showed last): a standby's ledger is emptied, so it exports nothing. A round runs
every `interval` seconds (longer when parsing and counting took more than a fifth of it) in its own
thread, off the reconcile loop and the pusher's rounds, with one request in flight per task at most,
so a slow proxy delays only its own counters.

A proxy whose control server has no traffic location (an agent from before traffic metrics: 404) is
skipped, logged once; a file the parser refuses is logged once per reason and counts nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor

from swarmgate.models.routing.route_types import RouteTable
from swarmgate.operator.delivery.control_client import ControlClient, NoTrafficLocation, PushError
from swarmgate.operator.delivery.traffic_file import TrafficFileError, parse_traffic
from swarmgate.operator.delivery.traffic_ledger import TrafficLedger
from swarmgate.operator.delivery.wire import ProxyTarget
from swarmgate.operator.planning.traffic_names import TrafficNames, traffic_names

log = logging.getLogger("swarmgate.traffic")

BUSY_SHARE_INVERSE = 5
Clients = Callable[[], "list[tuple[ProxyTarget, ControlClient | None]] | None"]


class TrafficPoller:
    """`start()`/`stop()`; `round()` once (the tests call it directly)."""

    def __init__(self, ledger: TrafficLedger, clients: Clients, *, interval: float = 3.0,
                 max_parallel: int = 8) -> None:
        self._ledger = ledger
        self._clients = clients
        self._tables: Mapping[str, RouteTable] = {}
        self._names: dict[str, tuple[RouteTable, TrafficNames]] = {}  # made once per table, in this thread
        self._interval = interval
        self._max_parallel = max_parallel
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._said: dict[str, str] = {}  # task → what was last logged about it (logged once per change)
        self._busy = 0.0  # seconds of parsing and counting since the last pause

    def follow(self, tables: Mapping[str, RouteTable]) -> None:
        """The route tables of the last pass, per extension: they name the next counters read."""
        self._tables = dict(tables)

    def names(self, extension: str) -> TrafficNames:
        table = self._tables.get(extension)
        if table is None:
            return TrafficNames()
        with self._lock:
            made = self._names.get(extension)
            if made is None or made[0] is not table:
                made = self._names[extension] = (table, traffic_names(table))
            return made[1]

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="swarmgate-traffic", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._in_flight.clear()

    def _run(self) -> None:
        while not self._stop.wait(self._pause()):
            try:
                self.round()
            except Exception:
                log.exception("reading the proxies' traffic counters failed")

    def _pause(self) -> float:
        """`interval`, or longer when parsing and counting took more than a fifth of it (thousands of
        busy routes): the reads then take at most about a fifth of one core, beside the passes."""
        with self._lock:
            busy, self._busy = self._busy, 0.0
        return max(self._interval, BUSY_SHARE_INVERSE * busy)

    def round(self) -> list[Future[None]]:
        """Start a read of every task that has none in flight; forget tasks that no longer run."""
        clients = self._clients()
        if clients is None:
            self._ledger.clear()  # a standby, or no key: this operator exports no traffic
            return []
        self._ledger.retain(t.task for t, _ in clients)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._max_parallel, thread_name_prefix="swarmgate-traffic")
        started = []
        for target, client in clients:
            running = self._in_flight.get(target.task)
            if client is None or (running is not None and not running.done()):
                continue
            future = self._executor.submit(self.read, target, client)
            self._in_flight[target.task] = future
            started.append(future)
        live = {t.task for t, _ in clients}
        for task in [t for t in self._in_flight if t not in live]:
            del self._in_flight[task]
        with self._lock:
            self._said = {t: s for t, s in self._said.items() if t in live}
        return started

    def read(self, target: ProxyTarget, client: ControlClient) -> None:
        """Fetch, parse and record one task's counters."""
        try:
            text = client.traffic()
            started = time.thread_time()  # this thread's CPU, not the wait for the proxy's answer
            traffic = parse_traffic(text)
        except NoTrafficLocation:
            self._say(target, "none", logging.INFO, "proxy task %s on %s serves no traffic counters (an agent "
                      "from before traffic metrics): its traffic is not exported")
            return
        except TrafficFileError as exc:
            self._say(target, f"refused: {exc}", logging.WARNING,
                      "proxy task %s on %s: traffic file refused, nothing of it counted: %s", str(exc))
            return
        except PushError as exc:
            log.debug("reading proxy task %s's traffic: %s", target.task, exc)  # the pusher says it once
            return
        if traffic.task != target.task:
            log.debug("traffic at %s:%d names task %s, not %s", target.addr, target.port, traffic.task, target.task)
            return
        self._ledger.record(target.extension, traffic, self.names(target.extension))
        with self._lock:
            self._busy += time.thread_time() - started
        self._say(target, "ok", logging.DEBUG, "proxy task %s on %s: traffic counters read")

    def _say(self, target: ProxyTarget, state: str, level: int, message: str, *more: str) -> None:
        with self._lock:
            changed = self._said.get(target.task) != state
            self._said[target.task] = state
        if changed:
            log.log(level, message, target.task, target.hostname or target.node, *more)

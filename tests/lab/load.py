"""Steady client load on the LB nodes, as the fault table measures it (does I/O: sockets, one thread).

`Load` sends `rate` requests per second to port 80 of each target node, a new TCP connection per
request, each bounded by `timeout` seconds, from one asyncio loop in a background thread (light on
the two shared cores: no thread per request). Every request is recorded: when it was sent, which
node and host, and the HTTP status or the exception. Requests go only to lab node addresses
(198.18.0.0/24), checked before the first one is sent and routed through the lab bridge.

    with Load({"lb-00": "198.18.0.14", "lb-01": "198.18.0.15"}, hosts=("demo.local",)) as load:
        ...                      # apply a fault
    load.summary()               # failed/total and the longest gap between successes, per node
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tests.lab import http

LAB_NODES = ipaddress.ip_network("198.18.0.0/24")
DEFAULT_RATE = 25.0  # requests per second to each node


@dataclass(frozen=True)
class Request:
    sent: float  # wall clock (time.time()) when the connection was opened
    done: float  # wall clock when the answer (or the error) arrived
    node: str
    host: str
    status: int  # 0: no HTTP answer (see error)
    error: str  # "" for an HTTP answer; else the exception's name and message

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def reason(self) -> str:
        return self.error or f"HTTP {self.status}"


@dataclass(frozen=True)
class NodeSummary:
    node: str
    total: int
    failed: int
    longest_gap_s: float  # longest time between two successful answers (or window edge and one)
    reasons: dict[str, int]


class Load:
    """Constant-rate GETs with a new connection each; call `start`/`stop` or use it as a context."""

    def __init__(self, targets: Mapping[str, str], *, hosts: Iterable[str] = ("demo.local",),
                 rate: float = DEFAULT_RATE, timeout: float = 2.0, path: str = "/ping", port: int = 80) -> None:
        for node, address in targets.items():
            if ipaddress.ip_address(address) not in LAB_NODES:
                raise ValueError(f"{node}: {address} is not a lab node address ({LAB_NODES})")
            http.assert_lab_route(address)
        self.targets = dict(targets)
        self.hosts = tuple(hosts)
        self.rate, self.timeout, self.path, self.port = rate, timeout, path, port
        self.records: list[Request] = []
        self.started = self.stopped = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="load", daemon=True)

    # -- life cycle

    def start(self) -> Load:
        self.started = time.time()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 10)
        self.stopped = time.time()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the client

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        interval = 1.0 / self.rate
        tick = 0
        t0 = time.monotonic()
        while not self._stop.is_set():
            host = self.hosts[tick % len(self.hosts)]  # hosts take turns
            for node, address in self.targets.items():
                task = asyncio.create_task(self._one(node, address, host))
                pending.add(task)
                task.add_done_callback(pending.discard)
            tick += 1
            delay = t0 + tick * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        if pending:
            await asyncio.wait(pending)

    async def _one(self, node: str, address: str, host: str) -> None:
        sent = time.time()
        status, error = 0, ""
        try:
            status = await asyncio.wait_for(self._get(address, host), timeout=self.timeout)
        except TimeoutError:
            error = f"timeout after {self.timeout:g} s"
        except OSError as exc:  # the class says it (ConnectionRefusedError, ...); the text repeats the address
            error = type(exc).__name__
        except ValueError as exc:  # a malformed status line
            error = f"bad answer: {exc}"
        rec = Request(sent, time.time(), node, host, status, error)
        with self._lock:
            self.records.append(rec)

    async def _get(self, address: str, host: str) -> int:
        reader, writer = await asyncio.open_connection(address, self.port)
        try:
            writer.write(f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ConnectionResetError(0, "closed before an answer")
            status = int(line.split()[1])
            await reader.read()  # the whole answer: a reset mid-body is a failure too
            return status
        finally:
            writer.close()

    # -- results

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.records)

    def failures(self, node: str | None = None) -> list[Request]:
        return [r for r in self.snapshot() if not r.ok and (node is None or r.node == node)]

    def summary(self, since: float | None = None, until: float | None = None) -> dict[str, NodeSummary]:
        start = self.started if since is None else since
        end = (self.stopped or time.time()) if until is None else until
        out = {}
        for node in self.targets:
            recs = sorted((r for r in self.snapshot() if r.node == node and start <= r.sent <= end),
                          key=lambda r: r.sent)
            failed = [r for r in recs if not r.ok]
            reasons: dict[str, int] = {}
            for r in failed:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
            marks = [start, *sorted(r.done for r in recs if r.ok), end]
            gap = max((b - a for a, b in itertools.pairwise(marks)), default=end - start)
            out[node] = NodeSummary(node, len(recs), len(failed), round(gap, 2), reasons)
        return out

    def failed_total(self) -> tuple[int, int]:
        recs = self.snapshot()
        return sum(1 for r in recs if not r.ok), len(recs)

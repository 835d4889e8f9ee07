"""Pushes each extension's current config to its proxy tasks (network I/O: HTTP to the proxies).

The data plane never waits for the operator: a proxy task starts from the last config its node
served, and its agent applies whatever is pushed into it. This module is the other half. Off the
reconcile thread, on every pass and every `recheck` seconds, it hands each running proxy task of
each extension to the `TaskTender`, which reads the task's status and pushes the config where the
task does not serve it. Tasks are tended in parallel, at most one request sequence per task at a
time, so a slow or dead node delays only itself.

After an operator restart the first round finds every proxy already serving the same deterministic
digest, and pushes nothing. Every push is gated by `term` (see `tender`): a standby operator, or a
leader that has not confirmed its lease lately, pushes nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from swarmgate.operator.delivery.channel_holder import Keyring
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.control_client import ControlClient
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.tender import TaskTender
from swarmgate.operator.delivery.wire import ProxyTarget

log = logging.getLogger("swarmgate.pusher")


class Pusher:
    """Keeps every proxy task serving its extension's current config; `start()`/`stop()`.

    `channel()` is the channel's keyring, or one key (None: this operator holds none yet, so it reads
    and pushes nothing). `term()` is the leader's term while this operator may push, else None (a
    standby, or a leader that has not confirmed its lease lately). Every push carries the term and a
    sequence number; an agent refuses anything older than what it accepted, so a deposed leader
    cannot undo a newer one's push, and a status that shows a newer term makes this pusher stand
    down at once.
    """

    def __init__(
        self,
        store: ProxyState,
        channel: Callable[[], ChannelKey | Keyring | None],
        *,
        term: Callable[[], int | None] = lambda: 1,
        on_forged: Callable[[str, str, str, str], None] | None = None,
        recheck: float = 3.0,
        push_timeout: float = 30.0,
        http_timeout: float = 3.0,
        max_parallel: int = 16,
    ) -> None:
        self._store = store
        self._channel = channel
        self._recheck = recheck
        self._max_parallel = max_parallel
        self._targets: dict[str, tuple[ProxyTarget, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight: dict[str, Future[None]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._tender = TaskTender(store, term=term, on_forged=on_forged, push_timeout=push_timeout,
                                  http_timeout=http_timeout, stop=self._stop, wake=self._wake.set)

    # -- what the reconciler calls -------------------------------------------------------------
    def publish(self, cluster: str, text: str, digest: str) -> None:
        """The `Publisher` the reconciler's apply step writes to: record, then push at once."""
        self._store.publish(cluster, text, digest)
        self._wake.set()

    def track(self, targets: Mapping[str, Sequence[ProxyTarget]]) -> None:
        """The proxy tasks to tend, per extension (from this pass's snapshot: `wire.proxy_targets`)."""
        with self._lock:
            self._targets = {ext: tuple(ts) for ext, ts in targets.items()}
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Tend in a background thread until `stop()`: a round per wake-up and per `recheck`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="swarmgate-pusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        self._in_flight.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.round()
            self._wake.wait(self._recheck)
            self._wake.clear()

    def _keyring(self) -> Keyring | None:
        found = self._channel()
        return Keyring.of(found) if isinstance(found, ChannelKey) else found

    def round(self) -> list[Future[None]]:
        """Start tending every tracked task that is not being tended already; returns the futures."""
        if self._tender.may_push() is None:
            return []
        key = self._keyring()
        if key is None:
            return []  # this operator does not hold the channel key (yet): it can prove nothing
        with self._lock:
            targets = [t for ts in self._targets.values() for t in ts]
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._max_parallel,
                                                    thread_name_prefix="swarmgate-push")
            executor = self._executor
        started = []
        for target in targets:
            running = self._in_flight.get(target.task)
            if running is not None and not running.done():
                continue
            future = executor.submit(self._tend_logged, target, key)
            self._in_flight[target.task] = future
            started.append(future)
        live = {t.task for t in targets}
        for task in [t for t in self._in_flight if t not in live]:
            del self._in_flight[task]
        return started

    def survey(self, timeout: float = 10.0) -> None:
        """Read every tracked task's status once, in parallel, and push nothing (`status`, `plan`)."""
        ring = self._keyring()
        if ring is None:
            return
        with self._lock:
            targets = [t for ts in self._targets.values() for t in ts]
        if not targets:
            return
        with ThreadPoolExecutor(max_workers=min(self._max_parallel, len(targets))) as pool:
            for future in [pool.submit(self._tender.read, t, ring) for t in targets]:
                future.result(timeout=timeout)

    def leading_clients(self) -> list[tuple[ProxyTarget, ControlClient | None]] | None:
        """Every tracked task with a client for the key generation it showed (None: not read yet),
        while this operator may push; None when it may not (a standby, or no key yet): it then reads
        nothing from the proxies but what `tend` needs (`traffic_poller`)."""
        if self._tender.may_push() is None:
            return None
        ring = self._keyring()
        if ring is None:
            return None
        with self._lock:
            targets = [t for ts in self._targets.values() for t in ts]
        return [(t, self._tender.client_for(t, ring)) for t in targets]

    # -- one task, in a worker thread ----------------------------------------------------------
    def _tend_logged(self, target: ProxyTarget, key: Keyring) -> None:
        """`tend` in a worker thread: a bug must be seen, not swallowed by the future nobody reads."""
        try:
            self._tender.tend(target, key)
        except Exception:
            log.exception("tending proxy task %s failed", target.task)
            raise

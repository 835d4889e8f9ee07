"""Pushes each extension's current config to its proxy tasks (network I/O: HTTP to the proxies).

The data plane never waits for the operator: a proxy task starts from the last config its node
served, and its agent applies whatever is pushed into it. This module is the other half. Off the
reconcile thread, on every pass and every `recheck` seconds, it reads each running proxy task's
status through the task's own control server (`wire`), and where the task does not serve the
extension's current digest, and has not already rejected that digest, it PUTs the config and reads
the status every 0.1 s until the task serves it or says why not. Tasks are tended in parallel, at
most one request sequence per task at a time, so a slow or dead node delays only itself.

A status is believed only when it names the very task the snapshot says runs at that address: a
stale container or an unknown ID is ignored and never shown as a proxy. After an operator restart
the first round finds every proxy already serving the same deterministic digest, and pushes
nothing. `is_leader` gates every request, so a standby operator stays silent.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.proxystate import ProxyState, PublishedConfig
from swarmgate.operator.delivery.wire import AgentStatus, ProxyTarget

log = logging.getLogger("swarmgate.pusher")

MAX_STATUS_BYTES = 8192


class PushError(Exception):
    """One request to a proxy's control server failed; the message says how (no token in it)."""


class ControlClient:
    """HTTP to one proxy task's control server; every request carries the token digest."""

    def __init__(self, target: ProxyTarget, token_digest: str, *, timeout: float) -> None:
        self.target = target
        self._headers = wire.headers(token_digest)
        self._timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.target.addr, self.target.port, timeout=self._timeout)
        try:
            conn.request(method, path, body=body, headers=self._headers)
            response = conn.getresponse()
            return response.status, response.read(MAX_STATUS_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            raise PushError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def status(self) -> AgentStatus:
        code, body = self._request("GET", wire.STATUS_PATH)
        if code != 200:
            raise PushError(f"GET {wire.STATUS_PATH}: HTTP {code}")
        status = wire.parse_status(body.decode("utf-8", "replace"))
        if status is None:
            raise PushError(f"GET {wire.STATUS_PATH}: not a {wire.PROTOCOL} status")
        return status

    def put(self, config: PublishedConfig) -> None:
        code, _ = self._request("PUT", wire.CONFIG_PATH, wire.push_body(config.digest, config.text))
        if code not in (201, 204):
            raise PushError(f"PUT {wire.CONFIG_PATH}: HTTP {code}")


class Pusher:
    """Keeps every proxy task serving its extension's current config; `start()`/`stop()`."""

    def __init__(
        self,
        store: ProxyState,
        token_digest: Callable[[], str | None],
        *,
        is_leader: Callable[[], bool] = lambda: True,
        recheck: float = 3.0,
        push_timeout: float = 30.0,
        http_timeout: float = 3.0,
        max_parallel: int = 16,
    ) -> None:
        self._store = store
        self._token_digest = token_digest
        self._is_leader = is_leader
        self._recheck = recheck
        self._push_timeout = push_timeout  # nginx -t of a 10k-service config takes seconds
        self._http_timeout = http_timeout
        self._max_parallel = max_parallel
        self._targets: dict[str, tuple[ProxyTarget, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight: dict[str, Future[None]] = {}
        self._unreachable: set[str] = set()  # tasks whose last attempt failed: logged once per change
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None

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

    def round(self) -> list[Future[None]]:
        """Start tending every tracked task that is not being tended already; returns the futures."""
        if not self._is_leader():
            return []
        digest = self._token_digest()
        if digest is None:
            return []  # the token secret is not in a snapshot yet: nothing could authorize us
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
            future = executor.submit(self.tend, target, digest)
            self._in_flight[target.task] = future
            started.append(future)
        live = {t.task for t in targets}
        for task in [t for t in self._in_flight if t not in live]:
            del self._in_flight[task]
        return started

    def survey(self, timeout: float = 10.0) -> None:
        """Read every tracked task's status once, in parallel, and push nothing (`status`, `plan`)."""
        digest = self._token_digest()
        if digest is None:
            return
        with self._lock:
            targets = [t for ts in self._targets.values() for t in ts]
        if not targets:
            return

        def read(target: ProxyTarget) -> None:
            try:
                self._read(ControlClient(target, digest, timeout=self._http_timeout))
            except PushError as exc:
                self._note_unreachable(target, str(exc))

        with ThreadPoolExecutor(max_workers=min(self._max_parallel, len(targets))) as pool:
            for future in [pool.submit(read, t) for t in targets]:
                future.result(timeout=timeout)

    # -- one task ------------------------------------------------------------------------------
    def tend(self, target: ProxyTarget, token_digest: str) -> None:
        """Read one task's status; push the current config if it needs it and wait for the outcome."""
        client = ControlClient(target, token_digest, timeout=self._http_timeout)
        try:
            status = self._read(client)
            if status is None:
                return
            config = self._store.current(target.extension)
            if config is None or config.digest in (status.serving, status.rejected):
                return
            if not self._is_leader():
                return
            started = time.monotonic()
            client.put(config)
            log.info("pushed config %s to proxy task %s on %s", config.digest[:12], target.task,
                     target.hostname or target.node)
            outcome = self._await(client, config.digest)
        except PushError as exc:
            self._note_unreachable(target, str(exc))
            return
        latest = self._store.current(target.extension)
        if latest is not None and latest.digest != config.digest:
            self._wake.set()  # published while we pushed: the next round need not wait for a recheck
        if outcome is None:
            log.warning("proxy task %s on %s did not apply config %s within %.0f s", target.task,
                        target.hostname or target.node, config.digest[:12], self._push_timeout)
            return
        self._record(target, outcome, pushed=True)
        seconds = time.monotonic() - started
        if outcome.rejected:
            first = outcome.message.splitlines()[0] if outcome.message else ""
            log.warning("proxy task %s on %s rejected config %s: %s", target.task,
                        target.hostname or target.node, config.digest[:12], first)
        else:
            log.info("proxy task %s on %s serves config %s (%.2f s after the push)", target.task,
                     target.hostname or target.node, config.digest[:12], seconds)

    def _read(self, client: ControlClient) -> AgentStatus | None:
        status = client.status()
        target = client.target
        if status.task != target.task:
            # Another container answers at this address (the task was replaced since the snapshot):
            # its word is not taken for this task's, and it is not shown until a snapshot lists it.
            log.debug("status at %s:%d names task %s, not %s", target.addr, target.port, status.task, target.task)
            return None
        with self._lock:
            was_unreachable = target.task in self._unreachable
            self._unreachable.discard(target.task)
        if was_unreachable:
            log.info("proxy task %s on %s answers again", target.task, target.hostname or target.node)
        self._record(target, status, pushed=False)
        return status

    def _await(self, client: ControlClient, digest: str) -> AgentStatus | None:
        deadline = time.monotonic() + self._push_timeout
        while not self._stop.wait(0.1):
            status = client.status()
            if status.task == client.target.task and digest in (status.serving, status.rejected):
                return status
            if time.monotonic() > deadline:
                return None
        return None

    def _record(self, target: ProxyTarget, status: AgentStatus, *, pushed: bool) -> None:
        self._store.record_status(cluster=target.extension, task=target.task, node=target.node,
                                  hostname=target.hostname, serving=status.serving, rejected=status.rejected,
                                  message=status.message, pushed=pushed)

    def _note_unreachable(self, target: ProxyTarget, reason: str) -> None:
        with self._lock:
            first = target.task not in self._unreachable
            self._unreachable.add(target.task)
        if first:
            log.warning("cannot reach proxy task %s on %s (%s:%d): %s", target.task,
                        target.hostname or target.node, target.addr, target.port, reason)

"""Pushes each extension's current config to its proxy tasks (network I/O: HTTP to the proxies).

The data plane never waits for the operator: a proxy task starts from the last config its node
served, and its agent applies whatever is pushed into it. This module is the other half. Off the
reconcile thread, on every pass and every `recheck` seconds, it reads each running proxy task's
status through the task's own control server (`wire`, over TLS that only channel-key holders
complete), and where the task does not serve the
extension's current digest, and has not already rejected that digest, it PUTs the config and reads
the status every 0.1 s until the task serves it or says why not. Tasks are tended in parallel, at
most one request sequence per task at a time, so a slow or dead node delays only itself.

A status is believed only when it names the very task the snapshot says runs at that address: a
stale container or an unknown ID is ignored and never shown as a proxy. After an operator restart
the first round finds every proxy already serving the same deterministic digest, and pushes
nothing. `term` gates every push, so a standby operator, or a leader that has not confirmed its
lease lately, pushes nothing; an agent's fence refuses a deposed leader's pushes anyway.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_holder import Keyring
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.control_client import ControlClient, PushError, SequenceNumbers, WrongKey
from swarmgate.operator.delivery.proxystate import ProxyState, PublishedConfig
from swarmgate.operator.delivery.wire import AgentStatus, ForgedStatus, ProxyTarget

log = logging.getLogger("swarmgate.pusher")


class Pusher:
    """Keeps every proxy task serving its extension's current config; `start()`/`stop()`.

    `channel()` is the channel's keyring, or one key (None: this operator holds none yet, so it reads
    and pushes nothing). A task that shows an older generation's certificate is handed the newest
    key first (`wire.rekey_body`), over its own generation's channel. `term()` is the leader's term
    while this operator may push, else None (a standby, or a leader that has not confirmed its lease
    lately). Every push carries the term and a sequence
    number; an agent refuses anything older than what it accepted, so a deposed leader cannot undo
    a newer one's push, and a status that shows a newer term makes this pusher stand down at once.
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
        self._term = term
        self._on_forged = on_forged
        self._recheck = recheck
        self._push_timeout = push_timeout  # nginx -t of a 10k-service config takes seconds
        self._http_timeout = http_timeout
        self._max_parallel = max_parallel
        self._seq = SequenceNumbers()
        self._targets: dict[str, tuple[ProxyTarget, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._in_flight: dict[str, Future[None]] = {}
        self._unreachable: set[str] = set()  # tasks whose last attempt failed: logged once per change
        self._newer_term: int = 0  # the newest term seen in a status that is not ours: we stand down
        self._contexts: dict[str, ssl.SSLContext] = {}  # per key fingerprint: loading one costs a file
        self._generation_of: dict[str, int] = {}  # task -> the key generation it showed last
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

    def _client(self, target: ProxyTarget, key: ChannelKey) -> ControlClient:
        with self._lock:
            context = self._contexts.get(key.fingerprint)
            if context is None:
                context = self._contexts[key.fingerprint] = key.client_context()
        return ControlClient(target, key, context, timeout=self._http_timeout)

    def _may_push(self) -> int | None:
        """This operator's term when it may push now: it leads, and no proxy has shown a newer term."""
        term = self._term()
        if term is None or term < self._newer_term:
            return None
        return term

    def _keyring(self) -> Keyring | None:
        found = self._channel()
        return Keyring.of(found) if isinstance(found, ChannelKey) else found

    def round(self) -> list[Future[None]]:
        """Start tending every tracked task that is not being tended already; returns the futures."""
        if self._may_push() is None:
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

        def read(target: ProxyTarget) -> None:
            try:
                self._connect(target, ring)
            except PushError as exc:
                self._note_unreachable(target, str(exc))

        with ThreadPoolExecutor(max_workers=min(self._max_parallel, len(targets))) as pool:
            for future in [pool.submit(read, t) for t in targets]:
                future.result(timeout=timeout)

    # -- one task ------------------------------------------------------------------------------
    def _tend_logged(self, target: ProxyTarget, key: Keyring) -> None:
        """`tend` in a worker thread: a bug must be seen, not swallowed by the future nobody reads."""
        try:
            self.tend(target, key)
        except Exception:
            log.exception("tending proxy task %s failed", target.task)
            raise

    def _connect(self, target: ProxyTarget, ring: Keyring) -> tuple[ControlClient, int, AgentStatus | None]:
        """The client for the key generation this task holds (the one it showed last, tried first),
        and its status; `WrongKey` when it shows none of the ring's certificates."""
        known = self._generation_of.get(target.task)
        order = sorted(ring.keys, key=lambda item: (item[0] != known, -item[0]))
        # Twice: while a task reloads onto a new key, its old and new workers share the socket, and
        # for a moment a handshake may meet either certificate.
        for attempt in range(2):
            for generation, key in order:
                client = self._client(target, key)
                try:
                    status = self._read(client)
                except WrongKey:
                    continue
                self._generation_of[target.task] = generation
                return client, generation, status
            if attempt == 0 and self._stop.wait(0.1):
                break
        raise WrongKey(f"the task shows a certificate of none of the {len(ring.keys)} channel key generation(s) "
                       "this operator holds")

    def _rekey(self, target: ProxyTarget, ring: Keyring, client: ControlClient, generation: int,
               ) -> tuple[ControlClient, AgentStatus | None]:
        """Hand the newest key to a task that holds an older generation; the client and status under
        the new key once the task shows its certificate."""
        newest_generation, newest = ring.newest
        bootstrap = ring.bootstrap
        if bootstrap is None:
            raise PushError("cannot rekey without generation 0 of the channel key")
        client.rekey(wire.rekey_body(client.key, bootstrap, newest, task=target.task, generation=newest_generation))
        fresh = self._client(target, newest)
        deadline = time.monotonic() + self._push_timeout
        while not self._stop.wait(0.1):
            try:
                status = self._read(fresh)
            except WrongKey:
                if time.monotonic() > deadline:
                    raise PushError(f"did not take key generation {newest_generation} within "
                                    f"{self._push_timeout:.0f} s") from None
                continue
            self._generation_of[target.task] = newest_generation
            log.info("proxy task %s on %s holds channel key generation %d (was %d)", target.task,
                     target.hostname or target.node, newest_generation, generation)
            return fresh, status
        raise PushError("stopped while rekeying")

    def tend(self, target: ProxyTarget, ring: Keyring | ChannelKey) -> None:
        """Read one task's status; push the current config if it needs it and wait for the outcome."""
        if isinstance(ring, ChannelKey):
            ring = Keyring.of(ring)
        try:
            client, generation, status = self._connect(target, ring)
            if status is None:
                return
            rekeyed = False
            if generation < ring.newest[0] and self._may_push() is not None:
                client, status = self._rekey(target, ring, client, generation)
                if status is None:
                    return
                rekeyed = True
            config = self._store.current(target.extension)
            # A rekeyed task's fence starts over at 0 0: push even the config it serves, so that the
            # fence holds this leader's term again at once (the agent then only says "already serving").
            if config is None or (config.digest in (status.serving, status.rejected) and not rekeyed):
                return
            term = self._may_push()
            if term is None:
                return
            if status.term > term:
                self._stand_down(target, status.term, term)
                return
            started = time.monotonic()
            seq = self._seq.next()
            self._put(client, config, term=term, seq=seq, rekeyed=rekeyed)
            log.info("pushed config %s to proxy task %s on %s (term %d)", config.digest[:12], target.task,
                     target.hostname or target.node, term)
            outcome = self._await(client, config.digest, term, seq)
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
        self._record(target, outcome, pushed=outcome.term == term)
        if outcome.term > term:
            self._stand_down(target, outcome.term, term)
            return
        seconds = time.monotonic() - started
        if outcome.rejected:
            first = outcome.message.splitlines()[0] if outcome.message else ""
            log.warning("proxy task %s on %s rejected config %s: %s", target.task,
                        target.hostname or target.node, config.digest[:12], first)
        else:
            log.info("proxy task %s on %s serves config %s (%.2f s after the push)", target.task,
                     target.hostname or target.node, config.digest[:12], seconds)

    def _put(self, client: ControlClient, config: PublishedConfig, *, term: int, seq: int, rekeyed: bool) -> None:
        """PUT a config. Right after a rekey, the workers of the reload before it may still take a
        connection for a moment (and show the old certificate): then try again, for a while."""
        deadline = time.monotonic() + self._push_timeout
        while True:
            try:
                client.put(config, term=term, seq=seq)
                return
            except WrongKey:
                if not rekeyed or time.monotonic() > deadline or self._stop.wait(0.1):
                    raise

    def _stand_down(self, target: ProxyTarget, seen: int, own: int) -> None:
        with self._lock:
            first = seen > self._newer_term
            self._newer_term = max(self._newer_term, seen)
        if first:
            log.warning("proxy task %s on %s accepted a push of term %d, newer than ours (%d): another "
                        "operator leads; this one pushes nothing more", target.task,
                        target.hostname or target.node, seen, own)

    def _read(self, client: ControlClient) -> AgentStatus | None:
        target = client.target
        try:
            status = client.status()
        except ForgedStatus as exc:
            # Whoever answered holds no channel key, yet answered on the task's control port with our
            # certificate's TLS: not a fault to retry quietly. Loud, counted, and on /readyz.
            log.warning("proxy task %s on %s (%s:%d) answered a status that is not signed with the "
                        "channel key (%s): not believed", target.task, target.hostname or target.node,
                        target.addr, target.port, exc)
            if self._on_forged is not None:
                self._on_forged(target.extension, target.task, target.hostname or target.node, str(exc))
            return None
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

    def _await(self, client: ControlClient, digest: str, term: int, seq: int) -> AgentStatus | None:
        """The task's status once it has handled this very push: its fence has reached (term, seq)
        (an authentic push moves it, applied or rejected), or a newer term shows."""
        deadline = time.monotonic() + self._push_timeout
        while not self._stop.wait(0.1):
            try:
                status = client.status()
            except (ForgedStatus, WrongKey):
                status = None  # an old worker of a reload still finishing: the next read meets a new one
            if status is not None and status.task == client.target.task and (
                    status.term > term
                    or (digest in (status.serving, status.rejected) and (status.term, status.seq) >= (term, seq))):
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

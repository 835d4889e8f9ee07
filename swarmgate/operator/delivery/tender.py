"""Brings one proxy task to its extension's current config (network I/O: HTTP to one proxy task).

`tend` reads the task's status through its own control server (`wire`, over TLS that only
channel-key holders complete) and, where the task does not serve the extension's current digest and
has not already rejected that digest, PUTs the config and reads the status every 0.1 s until the
task serves it or says why not. A task that shows an older generation's certificate is handed the
newest key first (`wire.rekey_body`), over its own generation's channel.

A status is believed only when it names the very task the snapshot says runs at that address: a
stale container or an unknown ID is ignored and never shown as a proxy. `term` gates every push, so
a standby operator, or a leader that has not confirmed its lease lately, pushes nothing; a status
that shows a newer term makes the tender stand down at once (an agent's fence refuses a deposed
leader's pushes anyway). The `Pusher` runs one tender for all tasks, from its worker threads.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable

from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_holder import Keyring
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.control_client import ControlClient, PushError, SequenceNumbers, WrongKey
from swarmgate.operator.delivery.proxystate import ProxyState, PublishedConfig
from swarmgate.operator.delivery.wire import AgentStatus, ForgedStatus, ProxyTarget

# The pusher's logger: what a push did is logged under one name whichever part of it acted.
log = logging.getLogger("swarmgate.pusher")


class TaskTender:
    """Reads and pushes to proxy tasks one at a time per call; safe to call from many threads.

    What it keeps across calls: a TLS context per key (loading one costs a file), the key generation
    each task showed last, which tasks are unreachable (logged once per change), and the newest term
    a proxy showed that is not ours. `stop` ends any wait; `wake` is called when a newer config was
    published while a push ran, so the next round need not wait for a recheck.
    """

    def __init__(
        self,
        store: ProxyState,
        *,
        term: Callable[[], int | None],
        on_forged: Callable[[str, str, str, str], None] | None,
        push_timeout: float,
        http_timeout: float,
        stop: threading.Event,
        wake: Callable[[], None],
    ) -> None:
        self._store = store
        self._term = term
        self._on_forged = on_forged
        self._push_timeout = push_timeout  # nginx -t of a 10k-service config takes seconds
        self._http_timeout = http_timeout
        self._stop = stop
        self._wake = wake
        self._seq = SequenceNumbers()
        self._lock = threading.Lock()
        self._unreachable: set[str] = set()  # tasks whose last attempt failed: logged once per change
        self._newer_term: int = 0  # the newest term seen in a status that is not ours: we stand down
        self._contexts: dict[str, ssl.SSLContext] = {}  # per key fingerprint: loading one costs a file
        self._generation_of: dict[str, int] = {}  # task -> the key generation it showed last

    def may_push(self) -> int | None:
        """This operator's term when it may push now: it leads, and no proxy has shown a newer term."""
        term = self._term()
        if term is None or term < self._newer_term:
            return None
        return term

    def client_for(self, target: ProxyTarget, ring: Keyring) -> ControlClient | None:
        """A client for the key generation the task showed last; None before `tend` has read it (a
        task that holds another generation is rekeyed by `tend`, not here)."""
        generation = self._generation_of.get(target.task)
        key = dict(ring.keys).get(generation) if generation is not None else None
        return None if key is None else self._client(target, key)

    def read(self, target: ProxyTarget, ring: Keyring) -> None:
        """Read one task's status and record it; push nothing (`Pusher.survey`)."""
        try:
            self._connect(target, ring)
        except PushError as exc:
            self._note_unreachable(target, str(exc))

    def tend(self, target: ProxyTarget, ring: Keyring | ChannelKey) -> None:
        """Read one task's status; push the current config if it needs it and wait for the outcome."""
        if isinstance(ring, ChannelKey):
            ring = Keyring.of(ring)
        try:
            client, generation, status = self._connect(target, ring)
            if status is None:
                return
            rekeyed = False
            if generation < ring.newest[0] and self.may_push() is not None:
                client, status = self._rekey(target, ring, client, generation)
                if status is None:
                    return
                rekeyed = True
            config = self._store.current(target.extension)
            # A rekeyed task's fence starts over at 0 0: push even the config it serves, so that the
            # fence holds this leader's term again at once (the agent then only says "already serving").
            # A task that holds this digest for its certificate files is not pushed it again: a push
            # of the same digest would only say what the task already waits for.
            # A digest it rejected is pushed again only when the store allows it once (a certificate
            # file that came late: planning/undelivered.py).
            if config is None or (config.digest in (status.serving, status.rejected, status.waiting)
                                  and not rekeyed and not self._repush(target, status, config.digest)):
                return
            term = self.may_push()
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
            self._wake()  # published while we pushed: the next round need not wait for a recheck
        if outcome is None:
            log.warning("proxy task %s on %s did not apply config %s within %.0f s", target.task,
                        target.hostname or target.node, config.digest[:12], self._push_timeout)
            return
        self._record(target, outcome, pushed=outcome.term == term)
        if outcome.term > term:
            self._stand_down(target, outcome.term, term)
            return
        seconds = time.monotonic() - started
        if outcome.waiting == config.digest:
            log.info("proxy task %s on %s holds config %s until the certificate courier brings its files (%s)",
                     target.task, target.hostname or target.node, config.digest[:12], outcome.message)
        elif outcome.rejected:
            first = outcome.message.splitlines()[0] if outcome.message else ""
            log.warning("proxy task %s on %s rejected config %s: %s", target.task,
                        target.hostname or target.node, config.digest[:12], first)
        else:
            log.info("proxy task %s on %s serves config %s (%.2f s after the push)", target.task,
                     target.hostname or target.node, config.digest[:12], seconds)

    def _repush(self, target: ProxyTarget, status: AgentStatus, digest: str) -> bool:
        return (digest == status.rejected and digest not in (status.serving, status.waiting)
                and self._store.take_repush(target.task, digest))

    def _client(self, target: ProxyTarget, key: ChannelKey) -> ControlClient:
        with self._lock:
            context = self._contexts.get(key.fingerprint)
            if context is None:
                context = self._contexts[key.fingerprint] = key.client_context()
        return ControlClient(target, key, context, timeout=self._http_timeout)

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
                    or (digest in (status.serving, status.rejected, status.waiting)
                        and (status.term, status.seq) >= (term, seq))):
                return status
            if time.monotonic() > deadline:
                return None
        return None

    def _record(self, target: ProxyTarget, status: AgentStatus, *, pushed: bool) -> None:
        self._store.record_status(cluster=target.extension, task=target.task, node=target.node,
                                  hostname=target.hostname, serving=status.serving, rejected=status.rejected,
                                  message=status.message, pushed=pushed, waiting=status.waiting)

    def _note_unreachable(self, target: ProxyTarget, reason: str) -> None:
        with self._lock:
            first = target.task not in self._unreachable
            self._unreachable.add(target.task)
        if first:
            log.warning("cannot reach proxy task %s on %s (%s:%d): %s", target.task,
                        target.hostname or target.node, target.addr, target.port, reason)

"""The operator's main loop: passes on events, on fast polls after a change, and on resync (I/O).

Docker events only say "look now": they set a flag and wake the loop, and any number of them that
arrive during a pass coalesce into one more pass. Timing comes from `retry.Schedule`; the stop event
is checked between passes, so SIGTERM never interrupts a pass half way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from swarmgate.errors import TerminalError
from swarmgate.operator.planning.retry import Outcome, Schedule, classify
from swarmgate.operator.telemetry.changes import ChangeLog

log = logging.getLogger("swarmgate.loop")


class PassRunner(Protocol):
    """What the loop drives: one pass, returning whether it changed anything."""

    def __call__(self) -> bool: ...


class Wakeup:
    """A coalescing trigger: many `set()` calls between two waits count as one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = False

    def set(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._cond:
            if not self._pending:
                self._cond.wait(timeout)
            fired, self._pending = self._pending, False
            return fired


class DockerHealth:
    """Whether Docker answers, logged once per change of state, not once per failed attempt."""

    def __init__(self) -> None:
        self.reachable: bool | None = None  # None until the first pass ends
        self.last_success: float | None = None
        self._failing: ChangeLog[str] = ChangeLog()

    def ok(self) -> None:
        if self._failing.update(()).ended:
            log.info("docker reachable again")
        self.reachable = True
        self.last_success = time.time()

    def ready(self, *, max_age: float) -> bool:
        """Docker answers and a pass succeeded within `max_age` seconds (see `control/readiness.py`)."""
        return self.reachable is True and self.last_success is not None and time.time() - self.last_success < max_age

    def failed(self, reason: str) -> None:
        if self._failing.update(("docker",)).appeared:
            log.warning("reconcile failing, retrying with backoff", extra={"error": reason})
        self.reachable = False


def run_loop(
    run_pass: PassRunner,
    *,
    schedule: Schedule,
    wakeup: Wakeup,
    stop: threading.Event,
    health: DockerHealth,
    on_outcome: Callable[[Outcome, float], None] | None = None,
    requeue_after: Callable[[], float | None] = lambda: None,
) -> None:
    """Run passes until `stop` is set; the retry and backoff policy lives in `schedule`.
    `requeue_after`: seconds within which the last pass wants the next one (None: no wish)."""
    while not stop.is_set():
        started = time.monotonic()
        changed, error = False, None
        try:
            changed = run_pass()
        except Exception as exc:
            # A bug in one pass must not end the operator: what was serving keeps serving, and the
            # next resync tries again from a fresh snapshot.
            error = exc
        took = time.monotonic() - started
        outcome = classify(changed=changed, error=error)
        if error is None:
            health.ok()
        elif outcome is Outcome.TEMPORARY_ERROR:
            health.failed(str(error))
        elif isinstance(error, TerminalError):
            log.error("reconcile failed; not retrying until something changes", extra={"error": str(error)})
        else:
            log.error("reconcile pass crashed", exc_info=error)
        if on_outcome is not None:
            on_outcome(outcome, took)
        delay = schedule.next_delay(outcome, took=took, requeue_after=requeue_after() if error is None else None)
        deadline = time.monotonic() + delay
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # While backing off, an event does not cut the wait short: Docker is what is failing.
            if wakeup.wait(min(remaining, 0.5)) and not schedule.backing_off:
                schedule.kick()
                break


def watch_events(
    connect: Callable[[], Any],
    wakeup: Wakeup,
    stop: threading.Event,
    *,
    types: tuple[str, ...] = ("service", "node", "config", "secret"),
) -> None:
    """Wake the loop on every Swarm event; reconnect with capped backoff when the stream breaks."""
    backoff = 0.5
    while not stop.is_set():
        stream = None
        try:
            api = connect()
            stream = api.events(filters={"type": list(types)}, decode=True)
            backoff = 0.5
            wakeup.set()  # whatever happened while we were not listening
            for _event in stream:
                wakeup.set()
                if stop.is_set():
                    break
        except Exception as exc:  # any failure of the stream means: reconnect later
            log.debug("event stream broken", extra={"error": type(exc).__name__})
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        stop.wait(backoff)
        backoff = min(backoff * 2, 15.0)

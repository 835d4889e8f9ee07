"""Holds, said once each: a log line when a hold appears (and when it ends), the
`swarmgate_proxy_update_held` gauge, and the lines `/readyz` adds to its body (no I/O but logging;
the body itself is `control/readiness.py`'s).

A hold is the plan's `NoOp` with a reason: the operator deliberately writes nothing for that
extension until the desired state changes. Passes repeat every few seconds, so logging each pass
would bury the one line that matters; each distinct hold is logged when it first shows up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from swarmgate.operator.planning.actions import HOLD_REASONS, Action, NoOp
from swarmgate.operator.telemetry import metrics
from swarmgate.operator.telemetry.changes import ChangeLog

log = logging.getLogger("swarmgate.holds")

HoldKey = tuple[str, str, str]  # extension, reason, detail
# A forged status stays on /readyz this long after the last one: long enough for someone to see it.
ALARM_SECONDS = 600.0


class HoldReport:
    """What is held now, kept between passes so each hold is logged once per appearance."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()  # guards the forged-status alarms (the pusher's threads add them)
        self._held: ChangeLog[HoldKey] = ChangeLog()
        self._clock = clock
        self._forged: dict[tuple[str, str], tuple[str, float]] = {}  # (extension, task) -> (line, when)

    def forged_status(self, extension: str, task: str, node: str, reason: str) -> None:
        """A proxy task's control port answered a status without the channel key's MAC: whatever
        answers there is not our agent (or the key differs). Counted, and on /readyz for a while."""
        metrics.PROXY_STATUS_FORGED_TOTAL.labels(extension=extension, node=node).inc()
        line = (f"alarm: {extension}: proxy task {task} on {node} answered a status not signed with the "
                f"channel key ({reason})")
        with self._lock:
            self._forged[(extension, task)] = (line, self._clock())

    def record(self, actions: Sequence[Action], extensions: Iterable[str], *, reconcile_id: str = "") -> None:
        held: frozenset[HoldKey] = frozenset(
            (a.extension, str(a.hold), a.detail) for a in actions
            if isinstance(a, NoOp) and a.hold is not None and a.extension is not None)
        changes = self._held.update(held)
        for extension, reason, detail in sorted(changes.appeared):
            log.warning("proxy update held", extra={"reconcile_id": reconcile_id, "extension": extension,
                                                    "reason": reason, "detail": detail})
        for extension, reason, _ in sorted(changes.ended):
            if not any(h[:2] == (extension, reason) for h in held):
                log.info("proxy update no longer held", extra={"reconcile_id": reconcile_id,
                                                               "extension": extension, "reason": reason})
        reasons = {(e, r) for e, r, _ in held}
        for extension in sorted(set(extensions) | {e for e, _ in reasons}):
            for reason in HOLD_REASONS:
                metrics.PROXY_UPDATE_HELD.labels(extension=extension, reason=reason).set(
                    int((extension, reason) in reasons))

    def lines(self) -> list[str]:
        """One line per hold, for the `/readyz` body: `held: EXTENSION (REASON): DETAIL`."""
        with self._lock:
            horizon = self._clock() - ALARM_SECONDS
            alarms = [line for _, (line, when) in sorted(self._forged.items()) if when >= horizon]
        return [f"held: {e} ({r}): {d}" for e, r, d in sorted(self._held.current)] + alarms


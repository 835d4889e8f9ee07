"""`/readyz`: whether the operator works, and what it deliberately holds (no I/O).

Ready means Docker answers and a pass succeeded recently. A hold (a config nginx rejects, a spec
Swarm rolled back from) or a forged proxy status is listed in the body but does not make the
operator unready: its healthcheck restarting it would change nothing, and would cost the proxies
their operator.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from swarmgate.operator.control.loop import DockerHealth
from swarmgate.operator.telemetry.holds import HoldReport


def max_pass_age(poll_interval: float) -> float:
    """How old the last successful pass may be while the operator counts as ready: five resync
    periods, and never under 30 s (a large Swarm's pass, or a backoff after one failure, fits)."""
    return max(30.0, 5 * poll_interval)


def readiness_body(ready: bool, report: HoldReport) -> bytes:
    """`/readyz`'s body: ready or not, then one line per hold and per recent alarm."""
    return "\n".join(["ready" if ready else "not ready", *report.lines()]).encode() + b"\n"


@dataclass
class Readiness:
    health: DockerHealth
    holds: HoldReport
    max_age: float

    def ready(self) -> bool:
        return self.health.ready(max_age=self.max_age)

    def answer(self) -> tuple[int, str, bytes]:
        """The `/readyz` route: 200 or 503, and the body."""
        ready = self.ready()
        return (200 if ready else 503), "text/plain", readiness_body(ready, self.holds)

    def document(self) -> dict[str, Any]:
        """`/v1/status`'s view of the same facts, as they are now (not as the last pass saw them)."""
        last = self.health.last_success
        return {"ready": self.ready(), "docker_reachable": self.health.reachable,
                "last_pass": None if last is None else
                datetime.datetime.fromtimestamp(last, datetime.UTC).isoformat(timespec="seconds"),
                "holds": self.holds.lines()}

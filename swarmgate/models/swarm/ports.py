"""A published port, as a service declares it and as a task reports it (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from swarmgate.models.quick_init import quick_init


# quick_init: a snapshot of 10,000 services builds some 30,000 of these, most host-mode ports of
# one task each (so the caches in task_json.py miss the first time a process sees them).
@quick_init
@dataclass(frozen=True)
class PortBinding:
    target_port: int
    published_port: int
    protocol: str
    mode: str


"""Say a thing once when it starts and once when it ends, not on every pass (pure, no I/O).

Passes repeat every few seconds and most of what they find is what the last pass found: a held
update, a service set aside, Docker unreachable. Logging each pass would bury the one line that
matters, so the places that report such findings keep the set they saw last and log the difference.
`ChangeLog` is that memory; the callers decide what a line says.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True)
class Changes(Generic[T]):
    """What one `ChangeLog.update` found: new since the last update, and gone since then."""

    appeared: frozenset[T]
    ended: frozenset[T]


class ChangeLog(Generic[T]):
    """The set of things seen last time, replaced by each `update`.

    One thread updates; others may read `current`, which is always one whole set (one assignment)."""

    def __init__(self) -> None:
        self.current: frozenset[T] = frozenset()

    def update(self, seen: Iterable[T]) -> Changes[T]:
        now = frozenset(seen)
        changes = Changes(appeared=now - self.current, ended=self.current - now)
        self.current = now
        return changes

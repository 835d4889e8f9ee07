"""What the Docker API calls of a pass cost, counted by kind (pure data: no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CallCounter:
    """API calls by kind, so tests and metrics can see what a pass cost."""

    reads: int = 0
    writes: int = 0
    errors: int = 0  # calls that failed or could not reach Docker
    by_call: dict[str, int] = field(default_factory=dict)

    def count(self, call: str, *, write: bool) -> None:
        self.by_call[call] = self.by_call.get(call, 0) + 1
        if write:
            self.writes += 1
        else:
            self.reads += 1

    def failed(self) -> None:
        self.errors += 1

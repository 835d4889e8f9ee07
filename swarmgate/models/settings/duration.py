"""Go-style durations ("3s", "500ms", "1m30s") as seconds (pure).

Interlock's TOML writes durations the way Go's `time.ParseDuration` reads them. We keep them as a
float number of seconds: what the Engine API wants (nanoseconds) and what nginx wants (seconds) are
both one multiplication away, and a float compares and prints plainly.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string; ValueError with what is allowed when it is not one."""
    raw = text.strip()
    if raw == "0":
        return 0.0
    if not raw:
        raise ValueError("expected a duration such as '3s', '500ms' or '1m30s', got ''")
    pos = 0
    total = 0.0
    while pos < len(raw):
        match = _PART.match(raw, pos)
        if match is None:
            raise ValueError(f"expected a duration such as '3s', '500ms' or '1m30s', got {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total


def _coerce_duration(value: object) -> float:
    # A bare number in TOML is taken as seconds: friendlier than rejecting `PollInterval = 3`.
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '3s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    if isinstance(value, str):
        return parse_go_duration(value)
    raise ValueError(f"expected a duration such as '3s', got {value!r}")


Duration = Annotated[float, BeforeValidator(_coerce_duration)]
"""Seconds, read from a Go duration string (or a bare number of seconds)."""


def format_seconds(seconds: float) -> str:
    """nginx time syntax for a number of seconds: whole seconds as `Ns`, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"

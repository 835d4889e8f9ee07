"""Go-style durations ("3s", "500ms", "1m30s") as seconds (pure).

Interlock's TOML writes durations the way Go's `time.ParseDuration` reads them. We keep them as a
float number of seconds: what the Engine API wants (nanoseconds) and what nginx wants (seconds) are
both one multiplication away, and a float compares and prints plainly.
"""

from __future__ import annotations

import math
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
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected a non-negative duration, got {value!r}")
        return float(value)
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError(f"expected a duration such as '3s', '500ms' or '1m30s', got {value[:20]!r}...")
        return parse_go_duration(value)
    raise ValueError(f"expected a duration such as '3s', got {value!r}")


def _show(seconds: float) -> str:
    if seconds >= 1 and seconds == int(seconds):
        whole = int(seconds)
        for unit, size in (("h", 3600), ("m", 60)):
            if whole % size == 0:
                return f"{whole // size}{unit}"
        return f"{whole}s"
    return f"{round(seconds * 1000)}ms"


def duration_in(low: float, high: float) -> BeforeValidator:
    """A duration between `low` and `high` seconds (inclusive)."""

    def check(value: object) -> float:
        seconds = _coerce_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"expected a duration from {_show(low) if low else '0s'} to {_show(high)}, got {value!r}")
        return seconds

    return BeforeValidator(check)


# nginx keeps timers in milliseconds in an ngx_msec_t, 32 bits wide on 32-bit builds: 2^31-1 ms is the
# longest time every nginx honours (about 24.8 days).
NGINX_MAX_SECONDS = 2_147_483.0

Duration = Annotated[float, duration_in(0.0, 365 * 86400.0)]
"""Seconds, read from a Go duration string (or a bare number of seconds), at most a year."""
NginxDuration = Annotated[float, duration_in(0.0, NGINX_MAX_SECONDS)]
"""A duration nginx is given: at most what its timers hold."""


def format_seconds(seconds: float) -> str:
    """nginx time syntax for a number of seconds: whole seconds as `Ns`, else milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"

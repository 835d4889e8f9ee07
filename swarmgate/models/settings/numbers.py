"""Integer types for the TOML config that refuse strings and booleans, within ranges (pure).

pydantic's lax mode would turn `"80"` or `true` into numbers; an Interlock file that says
`PublishedPort = "eighty"` must fail with the range that is allowed instead. TOML integers are
unbounded in Python, so every integer has an upper bound too: `MaxConnections =
99999999999999999999` passed a check that had none, and nginx then refused the config on every
proxy.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def int_in(low: int, high: int | None) -> BeforeValidator:
    """A validator that accepts an int (not a bool) in `low..high` (inclusive; None: unbounded)."""
    expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {expected}, got {value!r}")
        if value < low or (high is not None and value > high):
            shown = value if abs(value) < 10**30 else f"{str(value)[:12]}... ({len(str(value))} digits)"
            raise ValueError(f"expected {expected}, got {shown}")
        return value

    return BeforeValidator(check)


Port = Annotated[int, int_in(1, 65535)]
PositiveInt = Annotated[int, int_in(1, 2**31 - 1)]
NonNegativeInt = Annotated[int, int_in(0, 2**31 - 1)]

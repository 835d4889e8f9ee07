"""Integer types for the TOML config that refuse strings and booleans (pure).

pydantic's lax mode would turn `"80"` or `true` into numbers; an Interlock file that says
`PublishedPort = "eighty"` must fail with the range that is allowed instead.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator


def _int_in(low: int, high: int | None) -> BeforeValidator:
    expected = f"an integer {low}-{high}" if high is not None else f"an integer >= {low}"

    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {expected}, got {value!r}")
        if value < low or (high is not None and value > high):
            raise ValueError(f"expected {expected}, got {value!r}")
        return value

    return BeforeValidator(check)


Port = Annotated[int, _int_in(1, 65535)]
PositiveInt = Annotated[int, _int_in(1, None)]
NonNegativeInt = Annotated[int, _int_in(0, None)]

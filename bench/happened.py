"""The "What happened" list under a lab bench's table (bench/faults.py, bench/rolls.py): one line per
scenario with its notes, its failed requests by reason, an abort, and what it misses of its goal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def happened_lines(results: Iterable[dict[str, Any]], *, misses: str) -> list[str]:
    """`misses` names the goal a scenario's problems are measured against ("issue 9", "goal 4")."""
    lines = ["What happened:", ""]
    for r in results:
        reasons = "; ".join(f"{n}: " + ", ".join(f"{k} x{v}" for k, v in d["reasons"].items())
                            for n, d in r["per_node"].items() if d["reasons"])
        text = "; ".join(r["notes"]) or "no notes"
        if reasons:
            text += f". Failures: {reasons}"
        if r["error"]:
            text += f". Aborted: {r['error']}"
        if r["problems"]:
            text += f". Misses {misses}: {'; '.join(r['problems'])}"
        lines.append(f"* **{r['scenario']}** ({r['seconds']:g} s): {text}.")
    return lines

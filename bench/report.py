"""What the lab benches under load (bench/faults.py, bench/rolls.py) write alike: the "What happened"
list under their table, one line per scenario (its notes, failed requests by reason, an abort, what
it misses of its goal), and the run saved as JSON beside its Markdown."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def happened_lines(results: Iterable[dict[str, Any]], *, misses: str) -> list[str]:
    """`misses` names the goal a scenario's problems are measured against ("the fault table", "the rolls' bar")."""
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


def write_report(out: Path, run: dict[str, Any], markdown: Callable[[dict[str, Any]], str]) -> str:
    """`out`.json holds the run, `out`.md its report (also returned, for the console)."""
    text = markdown(run)
    out.with_suffix(".json").write_text(json.dumps(run, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return text

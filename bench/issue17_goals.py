"""Issue 17's goals, each with its verdict from the benchmarks' last results (pure reading of bench/*.json).

`make dataplane` ends with this: it reads what the data-plane benchmarks wrote (bench/dataplane.json's
`peers`, stock-layouts, keepalive-race, peer-changes, old-workers, old-workers-lab, offline-render, rolls) and says
for each goal `meets`, `misses` or `not measured`, with the figure, the limit, and the run's date and
commit, so a stale figure shows as one. It measures nothing itself. Writes bench/issue17-goals.md.

    python bench/issue17_goals.py [--bench DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
Row = tuple[str, str, str, str]  # goal, figure, verdict, source


def _load(bench: Path, name: str) -> dict[str, Any] | None:
    path = bench / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _source(doc: dict[str, Any], name: str) -> str:
    return f"bench/{name}.json, {doc.get('date', '?')}, {doc.get('commit', '?')}"


def _verdict(ok: bool) -> str:
    return "meets" if ok else "misses"


def peers_goals(bench: Path) -> list[Row]:
    """Goals 1 and 3: the goal table bench/peers.py checked in its newest run, `make dataplane`'s
    (bench/dataplane.json's `peers`) or one of swarmgate's targets only (bench/peers-defaults.json)."""
    doc = _load(bench, "dataplane")
    peers = (doc or {}).get("peers")
    defaults = (_load(bench, "peers-defaults") or {}).get("peers")
    runs = [(run["date"], name, run) for name, run in (("dataplane", peers), ("peers-defaults", defaults))
            if run and run.get("goals")]
    if not runs:
        return [("1, 3: peers on loopback", "", "not measured", "no bench/peers.py results")]
    _, name, newest = max(runs, key=lambda r: r[0])
    rows = [(f"{'3' if ('10,000' in g['goal']) else '1'}: {g['goal']}",
             "" if g["figure"] is None else f"{g['figure']:g} ({'≥' if g['at_least'] else '≤'} {g['limit']:g})",
             g["verdict"], _source(newest, name)) for g in newest["goals"]]
    if not peers:
        return rows
    shown = {r["target"] for r in peers.get("summary", [])}
    missing = [t for t in ("nginx-minimal", "haproxy", "caddy", "swarmgate") if t not in shown]
    rows.insert(0, ("1: the peers (minimal nginx, HAProxy, Caddy) measured beside swarmgate",
                    "all" if not missing else f"missing {', '.join(missing)}", _verdict(not missing),
                    _source(peers, "dataplane")))
    return rows


def keepalive_goal(bench: Path) -> list[Row]:
    doc = _load(bench, "keepalive-race")
    if doc is None:
        return [("2: upstream keep-alive, 0 failed", "", "not measured", "no bench/keepalive-race.json")]
    cases = {c["case"]: c for c in doc["cases"]}
    ours = [c for name, c in cases.items() if name.startswith("swarmgate") and not name.endswith("unlabelled")]
    old = cases.get("nginx-default-node")
    failed = sum(c["GET failed"] + c["POST failed"] for c in ours)
    shown = f"{failed} failed of {sum(c['GET'] + c['POST'] for c in ours)} with the defaults" + (
        f"; {old['POST failed']} POSTs failed with nginx's own idle timeout" if old else "")
    return [("2: keep-alive on by default, 0 failed requests (the old settings' failures shown beside)", shown,
             _verdict(failed == 0 and old is not None and old["POST failed"] > 0), _source(doc, "keepalive-race"))]


def backend_changes_goal(bench: Path) -> list[Row]:
    doc = _load(bench, "peer-changes")
    if doc is None:
        return [("4: backend-only changes without a reload", "", "not measured", "no bench/peer-changes.json")]
    lua = next((m for m in doc["modes"] if m["lua_balancer"]), None)
    stock = next((m for m in doc["modes"] if not m["lua_balancer"]), None)
    if lua is None or stock is None:
        return [("4: backend-only changes without a reload", "", "not measured", _source(doc, "peer-changes"))]
    shown = (f"LuaBalancer: {lua['reloads']} reloads in {len(lua['changes'])} changes, {lua['seconds_median']:g} s, "
             f"{lua['rss_mib_last']:g} MiB; stock: {stock['reloads']} reloads, {stock['seconds_median']:g} s, "
             f"{stock['rss_mib_last']:g} MiB")
    return [("4: backend-only changes without a reload where the image has Lua", shown,
             _verdict(lua["reloads"] == 0), _source(doc, "peer-changes"))]


def old_workers_goal(bench: Path) -> list[Row]:
    rows: list[Row] = []
    loop = _load(bench, "old-workers")
    if loop is not None:
        last = loop["timeout"]["samples"][-1]
        ws = loop["timeout"]["websockets"]
        rows.append(("5: bounded old workers, on loopback (bench/old_workers.py)",
                     f"{last['workers']:.0f} workers, {last['rss_mib']:.0f} MiB after {loop['changes']} changes; "
                     f"{ws['reconnected']} websockets reconnected", _verdict(ws["reconnected"] > 0),
                     _source(loop, "old-workers")))
    lab = _load(bench, "old-workers-lab")
    if lab is None:
        rows.append(("5: bounded old workers on an LB node of the lab", "", "not measured",
                     "no bench/old-workers-lab.json (bench/old_workers_lab.py)"))
    else:
        s = lab["steady"]
        shown = "" if s["verdict"] == "not measured" else (
            f"at most {s['most_workers']:.0f} workers (bound {s['worker_bound']}), RSS {s['rss_max_last_third']:.0f} "
            f"MiB last third vs {s['rss_max_before_last_third']:.0f} MiB before; timeout {lab['timeout_seconds']:g} s "
            f"for the run, README states {lab['readme_retirement_seconds']:g} s")
        rows.append(("5: bounded old workers on an LB node of the lab", shown, s["verdict"],
                     _source(lab, "old-workers-lab")))
    return rows


def layouts_goal(bench: Path) -> list[Row]:
    """Goal 3 by exact counts, for each layout stock nginx allows beside the balancer (bench/stock_layouts.py):
    instructions per request at 10k ÷ at 1 (≤ 1.11 stands for throughput ≥ 0.9x), `nginx -t` CPU 10k ÷ 1k
    (≤ 12) and its peak RSS at 10k (≤ 160 MiB), all three needed."""
    doc = _load(bench, "stock-layouts")
    if doc is None:
        return [("3: the stock-nginx layouts by exact counts", "", "not measured", "no bench/stock-layouts.json")]
    rows: list[Row] = []
    for name, layout in doc["layouts"].items():
        one, k1, k10 = (layout["sizes"][s] for s in ("1", "1000", "10000"))
        per_request = k10["instructions_per_request"] / one["instructions_per_request"]
        parse = k10["cpu_s"] / k1["cpu_s"]
        shown = (f"instructions/request 10k ÷ 1: {per_request:.2f} (≤ 1.11); `nginx -t` 10k ÷ 1k: {parse:.1f} (≤ 12); "
                 f"{k10['max_rss_mib']:g} MiB (≤ 160)")
        ok = per_request <= 1.11 and parse <= 12 and k10["max_rss_mib"] <= 160
        rows.append((f"3: layout `{name}`, all three at once", shown, _verdict(ok), _source(doc, "stock-layouts")))
    return rows


OFFLINE = "6: `swarmgate render` at 10k ≤ 2x loading the JSON (CPU time)"


def offline_goal(bench: Path) -> list[Row]:
    doc = _load(bench, "offline-render")
    if doc is None:
        return [(OFFLINE, "", "not measured", "no bench/offline-render.json")]
    # CPU time: on this shared machine a process's wall time also counts the neighbours' load.
    ratio = doc["rows"]["render"]["cpu_ratio"]
    return [(OFFLINE, f"{ratio:g} (≤ 2)", _verdict(ratio <= 2.0), _source(doc, "offline-render"))]


def rolls_goal(bench: Path) -> list[Row]:
    doc = _load(bench, "rolls")
    if doc is None:
        return [("7: no unexplained losses in the overlay rolls", "", "not measured", "no bench/rolls.json")]
    overlay = [r for r in doc["results"] if r["scenario"].startswith("overlay")]
    failed = sum(r["failed"] for r in overlay)
    return [("7: no unexplained losses in the overlay rolls (one run; the cause is the issue's own question)",
             f"{failed} failed of {sum(r['total'] for r in overlay)}", _verdict(bool(overlay) and failed == 0),
             _source(doc, "rolls"))]


SECTIONS: tuple[Callable[[Path], list[Row]], ...] = (peers_goals, layouts_goal, keepalive_goal, backend_changes_goal,
                                                      old_workers_goal, offline_goal, rolls_goal)


def goal_rows(bench: Path) -> list[Row]:
    rows = [row for section in SECTIONS for row in section(bench)]
    return sorted(rows, key=lambda r: r[0].split(":", 1)[0])  # by goal number, each section's order kept


def markdown(rows: list[Row]) -> str:
    lines = ["# Issue 17's goals", "",
             "Generated by `bench/issue17_goals.py` from the benchmarks' last results (each row names its run: "
             "a figure older than the code is stale).", "",
             "| goal | this run | verdict | from |", "|---|---|---|---|"]
    lines += [f"| {goal} | {figure} | **{verdict}** | {source} |" for goal, figure, verdict, source in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bench", type=Path, default=BENCH, help="where the results are, and the report goes")
    args = parser.parse_args(argv)
    rows = goal_rows(args.bench)
    (args.bench / "issue17-goals.md").write_text(markdown(rows))
    for goal, figure, verdict, _ in rows:
        print(f"{verdict:>12}: {goal}" + (f" ({figure})" if figure else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make faults`: the operator fault scenarios on the seed's lab cluster, under load, as a table.

Runs every scenario of tests/lab/faults.py (the same code as tests/lab/test_faults.py, with the
bench's longer windows) on the running lab, deployed the seed's way (`scripts/demo.sh up`), with
25 requests/s to each LB node throughout. Writes bench/faults.json (every figure, per node) and
bench/faults.md (the table, one line per scenario of what happened). The lab is restored at the end
even on failure: stopped nodes started again, the deployment and every `fault-*` object removed.

    .venv/bin/python bench/faults.py [--only NAME ...] [--out bench/faults] [--short]

Run it under the shared lab lock: `flock /tmp/swarmgate-lab.lock make faults`.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import happened_lines, write_report  # noqa: E402
from tests.lab import faults, tls_faults  # noqa: E402
from tests.lab.cluster import Lab, load_lab  # noqa: E402
from tests.lab.load import DEFAULT_RATE  # noqa: E402


def _what_ran(lab: Lab) -> str:
    """The operator image the lab held and the tree it came from (lab.py builds it from the working
    tree, so uncommitted work of the moment is part of what was measured)."""
    image = subprocess.run(["docker", "-H", lab.node(lab.managers[0]).sock, "image", "inspect", "-f", "{{.Id}}",
                            "swarmgate/operator:lab"], capture_output=True, text=True, check=False).stdout.strip()
    tree = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                          text=True, check=False).stdout.strip()
    return f"operator image {image[7:19] or '?'} built from tree {tree or '?'}"


def _cell(value: float | None, unit: str = " s") -> str:
    return "—" if value is None else f"{value:g}{unit}"


def markdown(run: dict[str, Any]) -> str:
    lines = [
        f"# Fault runs ({run['date']})",
        "",
        f"{run['cluster']}; deployed with `scripts/demo.sh up` (the seed's way, dynamic operator port); "
        f"{run['rate']:g} requests/s to each LB node, a new connection each, {run['timeout']:g} s timeout. "
        f"Windows: {run['windows']}. {run['operator']}. Run: `make faults` ({run['seconds']:.0f} s).",
        "",
        "| scenario | requests failed / total | longest gap | proxy tasks replaced | proxy spec version | "
        "new route served | Swarm writes (rivals) | meets the bar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in run["results"]:
        per_node = ", ".join(f"{n} {v['failed']}/{v['total']}" for n, v in r["per_node"].items())
        route = _cell(r["route_s"]) + " after create"
        if r["route_from_operator_s"] is not None:
            route += f", {r['route_from_operator_s']:g} s after operator start"
        if r["route_s"] is None:
            route = "not within the timeout"
        version = str(r["proxy_version_before"])
        if r["proxy_version_after"] != r["proxy_version_before"]:
            version += f" → {r['proxy_version_after']}"
        writes = "—" if r["writes"] is None else f"{r['writes']} in {r['writes_window_s']:g} s"
        verdict = "yes" if not r["problems"] else "**no**"
        lines.append(f"| {r['title']} | {r['failed']} / {r['total']} ({per_node}) | {r['longest_gap_s']:g} s | "
                     f"{r['proxy_replaced']} of {len(r['proxy_tasks_before'])} | {version} | {route} | {writes} | "
                     f"{verdict} |")
    lines.append("")
    lines += happened_lines(run["results"], misses="the fault table")
    lines += ["", "Judged as tests/lab/test_faults.py judges (0 failed requests on the judged LB nodes, no proxy "
              "task replaced beyond the one a fault kills, the proxy spec version unchanged, no 503 from a proxy "
              "started while the operator is away, 0 writes by rival operators after their start-up, a new route "
              "that arrives at all within the run's wait); times are figures, not pass marks."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The TLS rows run in the bench only (tests/lab/test_tls_hitless.py proves the same in `make test`).
    scenarios = (*faults.SCENARIOS, *tls_faults.SCENARIOS)
    parser.add_argument("--only", nargs="*", choices=[s.name for s in scenarios], help="scenarios to run")
    parser.add_argument("--out", default=str(REPO / "bench" / "faults"), help="path without .md/.json")
    parser.add_argument("--short", action="store_true", help="the tests' short windows")
    parser.add_argument("--operator-note", help="say which operator ran (default: image ID and `git describe`)")
    args = parser.parse_args()
    windows = faults.TEST if args.short else faults.BENCH
    specs = [s for s in scenarios if not args.only or s.name in args.only]
    lab = load_lab()
    operator = args.operator_note or _what_ran(lab)
    started = time.monotonic()
    results = []
    with faults.seed_deployment(lab) as seed:
        for spec in specs:
            result = faults.run_scenario(seed, spec, windows)
            results.append(result.as_dict() | {"problems": faults.problems(result)})
    run = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "cluster": f"{len(lab.managers)} managers, {len(lab.workers)} workers ({len(lab.lb_nodes)} LB nodes)",
        "operator": operator,
        "rate": DEFAULT_RATE, "timeout": 2.0,
        "windows": ", ".join(f"{k} {v:g} s" for k, v in vars(windows).items()),
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    print(write_report(Path(args.out), run, markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())

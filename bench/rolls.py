"""`make rolls`: backend changes under steady load on the seed's lab cluster, as a table.

Runs the scenarios of tests/lab/rolls.py (the same code as tests/lab/test_rolls.py, with longer load
windows, plus one task rolled both ways) on the running lab, deployed the seed's way
(`scripts/demo.sh up`), with 25 requests/s through each LB node to the changed backend. Writes
bench/rolls.json (every figure, per node) and bench/rolls.md (the table). The lab is restored at the
end even on failure (the deployment and every `fault-*` object removed).

    .venv/bin/python bench/rolls.py [--only NAME ...] [--out bench/rolls] [--short]

Run it under the shared lab lock: `flock /tmp/swarmgate-lab.lock make rolls`.
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
from tests.lab import rolls  # noqa: E402
from tests.lab.cluster import Lab, load_lab  # noqa: E402
from tests.lab.load import DEFAULT_RATE  # noqa: E402


def _what_ran(lab: Lab) -> str:
    image = subprocess.run(["docker", "-H", lab.node(lab.managers[0]).sock, "image", "inspect", "-f", "{{.Id}}",
                            "swarmgate/operator:lab"], capture_output=True, text=True, check=False).stdout.strip()
    tree = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                          text=True, check=False).stdout.strip()
    return f"operator image {image[7:19] or '?'} built from tree {tree or '?'}"


def markdown(run: dict[str, Any]) -> str:
    lines = [
        f"# Backend changes under load ({run['date']})",
        "",
        f"{run['cluster']}; the seed deployed with `scripts/demo.sh up`; the changed backend is `swarmgate/demo:lab` "
        "(it stops accepting on SIGTERM and finishes what it has), pinned to the plain workers, either published in "
        "host mode (`--publish mode=host,target=8080`, the seed's way) or on an overlay network of its own (task "
        "mode, Interlock's default). "
        f"{run['rate']:g} requests/s through each LB node to it, a new connection each, {run['timeout']:g} s timeout, "
        f"from {run['windows']['before']:g} s before the change until {run['windows']['after']:g} s after Swarm "
        f"finished it and every proxy served exactly the new tasks. {run['operator']}. "
        f"Run: `make rolls` ({run['seconds']:.0f} s).",
        "",
        "| scenario | requests failed / total | per LB node: failed / total, longest gap | change done and "
        "served after | meets the bar |",
        "|---|---|---|---|---|",
    ]
    for r in run["results"]:
        per_node = "; ".join(f"{n} {v['failed']} / {v['total']}, {v['longest_gap_s']:g} s"
                             for n, v in r["per_node"].items())
        done = "—" if r["change_s"] is None else f"{r['change_s']:g} s"
        if r["problems"]:
            verdict = "**no**"
        elif r["expect_failures"]:
            verdict = "measured (no retry can save these)"
        else:
            verdict = "yes"
        lines.append(f"| {r['title']} | {r['failed']} / {r['total']} | {per_node} | {done} | {verdict} |")
    lines += ["", "One task rolled stop-first is the case nginx's retry cannot save: from the moment Swarm's stop "
              "signal reaches the only task until its replacement runs and is served, the route has no task "
              "that answers (502 while the stopped task is still listed, 503 once it is not). swarmgate keeps "
              "that task routed until then (it answers until the signal, about a second after Swarm marks it "
              "for shutdown), so only that window is lost. With start-first, or with more than one task, "
              "nothing is.", ""]
    lines += happened_lines(run["results"], misses="the rolls' bar")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(rolls.BY_NAME), help="scenarios to run")
    parser.add_argument("--out", default=str(REPO / "bench" / "rolls"), help="path without .md/.json")
    parser.add_argument("--short", action="store_true", help="the tests' short windows")
    args = parser.parse_args()
    windows = rolls.TEST if args.short else rolls.BENCH
    specs = tuple(s for s in rolls.SCENARIOS if not args.only or s.name in args.only)
    lab = load_lab()
    operator = _what_ran(lab)
    started = time.monotonic()
    with rolls.deployment(lab) as seed:
        results = [r.as_dict() | {"problems": rolls.problems(r)} for r in rolls.run_all(seed, specs, windows)]
    run = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "cluster": f"{len(lab.managers)} managers, {len(lab.workers)} workers ({len(lab.lb_nodes)} LB nodes)",
        "operator": operator,
        "rate": DEFAULT_RATE, "timeout": 2.0,
        "windows": vars(windows),
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    print(write_report(Path(args.out), run, markdown))
    return 0 if all(not r["problems"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

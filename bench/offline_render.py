"""`swarmgate render` at 10,000 services as a whole process, beside a process that only `json.load`s
the same state file: the offline path's cost over reading its input.

The state file is the 10,000-service Swarm of `make bench` (bench/peer_configs.py's
`state_document`: 3 tasks each on 50 nodes, 37 MB of Engine API JSON), the config the seed's. The
processes run alternately, `--runs` times each (`json.load`, then `render` of this checkout, then,
with `--baseline DIR`, `render` of another checkout, e.g. main's, so a change is measured side by
side); each figure is a median of wall time and of CPU time (user + system, from `os.wait4`: the
machine is shared, and CPU time moves less with the neighbours' load). Results:
bench/offline-render.md and .json.

    python bench/offline_render.py [--runs 7] [--baseline /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer_configs as pc  # noqa: E402
from bench.peers import commit  # noqa: E402
from bench.report import write_report  # noqa: E402

OUT = REPO / "bench" / "offline-render"
SERVICES = 10000


def timed(argv: list[str], env: dict[str, str], *, output: list[bytes] | None = None) -> tuple[float, float]:
    """Wall and CPU seconds (the child's user + system) of one process; its output is discarded, or
    appended to `output`. It runs in the temp directory: `python -m` puts the working directory first
    on sys.path, so run from a checkout it would import that checkout whatever PYTHONPATH says (the
    baseline row measured this checkout's code until this was fixed)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL if output is None else subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tempfile.gettempdir())
    if output is not None and proc.stdout is not None:
        output.append(proc.stdout.read())
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


STAGES = {"start": "interpreter start", "imports": "imports", "read": "reading the file", "json": "`json.loads`",
          "snapshot": "Engine JSON → snapshot (and dropping the JSON)", "route_table": "route table",
          "render": "jinja2 render (config + bootstrap)", "decide_rest": "rest of `decide_pass`",
          "rest": "output, freeing the pass", "exit": "interpreter exit"}


def stages(runs: int, config: Path, state: Path, env: dict[str, str]) -> dict[str, float]:
    """Median CPU seconds of each stage of `render` (bench/offline_stages.py), `runs` processes."""
    seen: dict[str, list[float]] = {name: [] for name in STAGES}
    argv = [sys.executable, str(REPO / "bench" / "offline_stages.py"), str(config), str(state)]
    for _ in range(runs):
        output: list[bytes] = []
        _, cpu = timed(argv, env, output=output)
        spent = json.loads(output[0])
        spent["exit"] = cpu - sum(spent.values())
        for name in STAGES:
            seen[name].append(spent[name])
    return {name: round(statistics.median(values), 3) for name, values in seen.items()}


def run(runs: int, baseline: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="swarmgate-offline-render-") as tmp:
        work = Path(tmp)
        state, config = work / "state.json", work / "config.toml"
        state.write_text(json.dumps(pc.state_document(SERVICES, 8080)))
        config.write_text((REPO / "lab" / "seed-config.toml").read_text())
        # Bytecode as an installed package has it (pip compiles at install): written to a cache of this
        # run by the warm-up below and read by every timed process, whatever PYTHONDONTWRITEBYTECODE says.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "json.load": ([sys.executable, "-c", f"import json; json.load(open({str(state)!r}))"], env),
            "render": ([sys.executable, "-m", "swarmgate", "render", "-c", str(config), "--state", str(state)],
                       {**env, "PYTHONPATH": str(REPO)}),
        }
        if baseline is not None:
            commands["render (baseline)"] = (commands["render"][0], {**env, "PYTHONPATH": str(baseline)})
        for argv, cmd_env in commands.values():  # the warm-up: writes the bytecode, not timed
            timed(argv, cmd_env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for i in range(runs):
            for name, (argv, cmd_env) in commands.items():
                times[name].append(timed(argv, cmd_env))
            print(f"[offline-render] run {i + 1}/{runs}: " + ", ".join(
                f"{n} {t[-1][0]:.2f} s ({t[-1][1]:.2f} CPU)" for n, t in times.items()), file=sys.stderr, flush=True)
        size = state.stat().st_size
        breakdown = stages(runs, config, state, commands["render"][1])
    rows = {name: {"wall_s": round(statistics.median(w for w, _ in t), 3),
                   "cpu_s": round(statistics.median(c for _, c in t), 3),
                   "wall_all": [round(w, 2) for w, _ in t], "cpu_all": [round(c, 2) for _, c in t]}
            for name, t in times.items()}
    base = rows["json.load"]
    for row in rows.values():
        row["wall_ratio"] = round(row["wall_s"] / base["wall_s"], 2)
        row["cpu_ratio"] = round(row["cpu_s"] / base["cpu_s"], 2)
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(), "runs": runs,
            "services": SERVICES, "state_bytes": size, "baseline": str(baseline) if baseline else None,
            "baseline_commit": _head(baseline) if baseline else None, "rows": rows, "stages": breakdown,
            "bytecode": "compiled once by a warm-up run, then reused (as an installed package's)"}


def _head(repo: Path) -> str:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False).stdout.strip()


def markdown(r: dict[str, Any]) -> str:
    lines = ["# `swarmgate render` at 10,000 services, beside `json.load` of its state file", "",
             f"Generated by `bench/offline_render.py` on {r['date']}, commit {r['commit']}"
             + (f" (baseline: {r['baseline_commit']})" if r["baseline"] else "")
             + f"; {r['runs']} alternating runs of each process, medians; the state file is "
             f"{r['state_bytes'] / 1e6:.0f} MB. Goal: render ≤ 2x `json.load`.", "",
             "| process | wall | x json.load | CPU | x json.load |", "|---|---|---|---|---|"]
    for name, row in r["rows"].items():
        lines.append(f"| {name} | {row['wall_s']:.2f} s | {row['wall_ratio']:.2f} | {row['cpu_s']:.2f} s | "
                     f"{row['cpu_ratio']:.2f} |")
    lines += ["", f"Where `render`'s CPU goes (`bench/offline_stages.py`, the same command with timers; median "
              f"of {r['runs']} processes; Python's bytecode: {r['bytecode']}):", "",
              "| stage | CPU |", "|---|---|"]
    lines += [f"| {STAGES[name]} | {seconds:.3f} s |" for name, seconds in r["stages"].items()]
    lines.append(f"| **sum** | {sum(r['stages'].values()):.3f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="another checkout whose render runs alongside")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    results = run(args.runs, args.baseline)
    write_report(args.out, results, markdown)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

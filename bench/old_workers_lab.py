"""Old nginx workers on the lab: an LB node's proxy task under continuous route changes, with
websocket clients connecting all the time, watched until its worker count and memory level off.

bench/old_workers.py shows the same on loopback, beside a proxy without `worker_shutdown_timeout`;
this runs the real thing: the seed deployment (reused when converged, else `scripts/demo.sh up`, and
removed again at the end), its operator given `WorkerShutdownTimeout = --timeout` for the run (a
Swarm config swapped in, and the seed's swapped back afterwards), a routed service with the
websocket endpoint `/ws` (the demo backend echoes), and a second routed service whose host name
changes every `--interval` seconds: each change is a re-render, a push and a reload on every LB node.
Before each change 5 new websocket clients connect through the first LB node's port 80 (the same
clients as bench/old_workers.py: a message echoed every 10 s, reconnecting when their connection ends).
After each change it reads, from this host's /proc (the lab's engines share its kernel), the proxy
task's nginx processes on that node: the workers of every generation, and the RSS and PSS of the
master and its workers.

The README states that old workers retire at most 240 s (`WorkerShutdownTimeout`'s default) after a
reload; the run uses a shorter timeout so that a few minutes show the plateau: about timeout / interval
generations live at once, whatever the number of changes. Results: bench/old-workers-lab.md and .json.
It changes the lab: hold the lab lock while it runs.

    flock /tmp/swarmgate-lab.lock .venv/bin/python bench/old_workers_lab.py [--minutes 3] [--interval 5] [--timeout 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.old_workers import NEW_CLIENTS, client, memory  # noqa: E402
from bench.peers import _children, commit  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests import docker_api  # noqa: E402
from tests.lab.seed_deployment import CONFIG, OPERATOR, PROXY, SEED_TOML, Seed  # noqa: E402
from tests.support import wait_for  # noqa: E402

OUT = REPO / "bench" / "old-workers-lab"
README_RETIREMENT = 240.0  # what the README states, WorkerShutdownTimeout's default


def log(msg: str) -> None:
    print(f"[old-workers-lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class LabTarget:
    """The websocket clients' way in: an LB node's port 80, with the routed service's host name."""

    address: str
    host: str
    port: int = 80
    ws: dict[str, int] = field(default_factory=lambda: {"opened": 0, "eof": 0, "reset": 0, "reconnected": 0,
                                                         "failed": 0})


def with_timeout(seed_toml: str, seconds: float) -> str:
    marker = "[Extensions.default.Config]"
    if marker not in seed_toml:
        raise SystemExit(f"the seed's configuration has no {marker} table")
    return seed_toml.replace(marker, f'{marker}\n      WorkerShutdownTimeout = "{seconds:g}s"', 1)


def swap_config(seed: Seed, old: str, new: str) -> None:
    """The operator's /config.toml from Swarm config `old` to `new`; returns once a new operator task
    runs and the deployment is converged again (every LB node answers)."""
    before = {t["ID"] for t in seed.operator_tasks()}
    seed.cli("service", "update", "--detach", "--no-resolve-image", "--config-rm", old,
             "--config-add", f"source={new},target=/config.toml", OPERATOR)
    seed.wait_new_operator(before, 120)
    wait_for(seed.converged, timeout=120, what="the seed converged after the config swap")


def _ppid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[1])


def host_pid(seed: Seed, node: str, node_pid: int) -> int:
    """The host's pid of a process `node`'s engine knows as `node_pid`: each lab node has its own pid
    namespace (lab/cluster.py), so the engine's `State.Pid` is the second of the process's `NSpid`s,
    and the process descends from that node's init (the parent of its dockerd)."""
    sock = seed.lab.node(node).sock.removeprefix("unix://").encode()
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    node_init = None
    for pid in pids:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if cmdline.startswith(b"/usr/sbin/dockerd") and sock in cmdline:
                node_init = _ppid(pid)
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            nspid = next(line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                         if line.startswith("NSpid:"))
            if len(nspid) >= 2 and int(nspid[1]) == node_pid:
                ancestor = pid
                while ancestor > 1 and ancestor != node_init:
                    ancestor = _ppid(ancestor)
                if ancestor == node_init:
                    return pid
    raise RuntimeError(f"no process of {node} is pid {node_pid} in its namespace")


def nginx_processes(seed: Seed, node: str) -> tuple[int, list[int]]:
    """The proxy task's nginx master on `node` and its workers (every generation), as pids of this host."""
    container = seed.container_on(node, PROXY)
    init = host_pid(seed, node, int(seed.cli("inspect", "-f", "{{.State.Pid}}", container, node=node).strip()))
    todo, masters = [init], []
    while todo:  # the agent is the task's PID 1; nginx's master is its child
        pid = todo.pop()
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: master process"):
                masters.append(pid)
                continue
        todo.extend(_children(pid))
    if len(masters) != 1:
        raise RuntimeError(f"expected one nginx master in {container[:12]} on {node}, found {masters}")
    return masters[0], [p for p in _children(masters[0]) if _is_worker(p)]


def _is_worker(pid: int) -> bool:
    # An old worker that retires between the listing and this read is gone: not counted, no error
    # (a fresh-clone `make dataplane` once stopped here on a FileNotFoundError).
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"nginx: worker process")
    except OSError:
        return False


def sample(seed: Seed, node: str, change: int, t0: float, open_ws: int) -> dict[str, float]:
    master, workers = nginx_processes(seed, node)
    rss, pss = memory([master, *workers])
    return {"change": change, "t": round(time.monotonic() - t0, 1), "workers": len(workers),
            "rss_mib": round(rss, 1), "pss_mib": round(pss, 1), "open_websockets": open_ws}


async def churn(seed: Seed, target: LabTarget, node: str, churn_service: str, *, minutes: float,
                interval: float) -> list[dict[str, float]]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    opened = [0]
    samples = [sample(seed, node, 0, time.monotonic(), 0)]
    t0 = time.monotonic()
    change = 0
    while time.monotonic() - t0 < minutes * 60:
        change += 1
        tasks += [asyncio.ensure_future(client(target, stop, opened)) for _ in range(NEW_CLIENTS)]
        await asyncio.sleep(interval / 2)
        await asyncio.to_thread(seed.cli, "service", "update", "--detach", "--label-add",
                                f"com.docker.lb.hosts={churn_service}-{change}.local", churn_service)
        await asyncio.sleep(interval / 2)
        row = await asyncio.to_thread(sample, seed, node, change, t0, opened[0])
        samples.append(row)
        log(f"change {change} at {row['t']:.0f} s: {row['workers']:.0f} workers, RSS {row['rss_mib']:.0f} MiB, "
            f"PSS {row['pss_mib']:.0f} MiB, {row['open_websockets']:.0f} websockets open")
    stop.set()
    await asyncio.gather(*tasks)
    return samples


def steady(samples: list[dict[str, float]], timeout: float, interval: float) -> dict[str, Any]:
    """The plateau: once a first timeout has passed, the worker count stays within the generations a
    timeout can hold (one per change in it, plus the serving one), and the memory of the run's last
    third is no higher than the highest before it."""
    settled = [s for s in samples if s["t"] >= timeout + interval]
    bound = math.ceil(timeout / interval) + 2
    if len(settled) < 6:
        return {"verdict": "not measured", "why": "the run was shorter than two timeouts"}
    third = len(settled) // 3
    early, late = settled[:-third], settled[-third:]
    most_workers = max(s["workers"] for s in settled)
    rss_early, rss_late = max(s["rss_mib"] for s in early), max(s["rss_mib"] for s in late)
    meets = most_workers <= bound and rss_late <= rss_early * 1.05
    return {"verdict": "meets" if meets else "misses", "worker_bound": bound, "most_workers": most_workers,
            "rss_max_before_last_third": rss_early, "rss_max_last_third": rss_late}


def run(minutes: float, interval: float, timeout: float, keep: bool) -> dict[str, Any]:
    seed = Seed(log=log)
    deployed = False
    try:
        reuse = seed.converged()
    except Exception as exc:  # no seed deployed: its services are missing
        log(f"no converged seed ({type(exc).__name__}); deploying it")
        reuse = False
    if not reuse:
        seed.deploy()
        deployed = True
    node = seed.lab.lb_nodes[0]
    address = seed.lab.address(node)
    conf, ws_service, churn_service = seed.name("conf"), seed.name("ws"), seed.name("churn")
    seed.cli("config", "create", conf, "-", stdin=with_timeout(SEED_TOML.read_text(), timeout))
    swapped = False
    try:
        t_swap = time.monotonic()
        swap_config(seed, CONFIG, conf)
        swapped = True
        log(f"operator runs with WorkerShutdownTimeout = {timeout:g}s ({time.monotonic() - t_swap:.0f} s)")
        seed.create_route(ws_service, {"com.docker.lb.hosts": f"{ws_service}.local", "com.docker.lb.port": "8080",
                                       "com.docker.lb.websocket_endpoints": "/ws"})
        seed.create_route(churn_service, {"com.docker.lb.hosts": f"{churn_service}-0.local",
                                          "com.docker.lb.port": "8080"})
        wait_for(lambda: seed.answers(node, f"{ws_service}.local", metadata=ws_service), timeout=120,
                 what=f"{node} serves {ws_service}")
        target = LabTarget(address, f"{ws_service}.local")
        log(f"{minutes:g} min of route changes every {interval:g} s, {NEW_CLIENTS} new websockets before each, "
            f"through {node} ({address})")
        samples = asyncio.run(churn(seed, target, node, churn_service, minutes=minutes, interval=interval))
    finally:
        for service in (ws_service, churn_service):
            with contextlib.suppress(Exception):
                docker_api.remove_service(seed.client(), service)
        if swapped:
            swap_config(seed, conf, CONFIG)
        with contextlib.suppress(RuntimeError):
            seed.cli("config", "rm", conf)
        if deployed and not keep:
            seed.undeploy()
        seed.close()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(), "node": node,
            "minutes": minutes, "interval": interval, "timeout_seconds": timeout,
            "readme_retirement_seconds": README_RETIREMENT, "new_clients_per_change": NEW_CLIENTS,
            "samples": samples, "websockets": target.ws, "steady": steady(samples, timeout, interval)}


def markdown(r: dict[str, Any]) -> str:
    s, w = r["steady"], r["websockets"]
    lines = ["# Old nginx workers on the lab", "",
             f"Generated by `bench/old_workers_lab.py` on {r['date']}, commit {r['commit']}: the seed deployment, "
             f"its operator run with `WorkerShutdownTimeout = \"{r['timeout_seconds']:g}s\"` (the default, which "
             f"the README states, is {r['readme_retirement_seconds']:g} s), a route change every "
             f"{r['interval']:g} s for {r['minutes']:g} min (a reload on every LB node each), "
             f"{r['new_clients_per_change']} new websocket clients before each through {r['node']}'s proxy, "
             "which is the one measured: its nginx workers (every generation) and the RSS and PSS of the master "
             "and its workers, summed.", "",
             "| after change | at | workers | RSS | PSS | open websockets |", "|---|---|---|---|---|---|"]
    samples = r["samples"]
    picks = sorted({0, *(min(len(samples) - 1, round(len(samples) * k / 6)) for k in range(1, 7))})
    for i in picks:
        x = samples[i]
        lines.append(f"| {x['change']:.0f} | {x['t']:.0f} s | {x['workers']:.0f} | {x['rss_mib']:.0f} MiB | "
                     f"{x['pss_mib']:.0f} MiB | {x['open_websockets']:.0f} |")
    lines += ["", "| websockets opened | closed by the proxy (EOF) | reset | reconnected, echo back | "
              "handshakes failed |", "|---|---|---|---|---|",
              f"| {w['opened']} | {w['eof']} | {w['reset']} | {w['reconnected']} | {w['failed']} |", ""]
    if s["verdict"] == "not measured":
        lines.append(f"Steady state: **not measured** ({s['why']}).")
    else:
        lines.append(f"Steady state: **{s['verdict']}**: after the first timeout, at most {s['most_workers']:.0f} "
                     f"workers (bound: {s['worker_bound']}, one generation per change a timeout holds, plus the "
                     f"serving one); highest RSS {s['rss_max_before_last_third']:.0f} MiB before the run's last "
                     f"third, {s['rss_max_last_third']:.0f} MiB in it.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between route changes")
    parser.add_argument("--timeout", type=float, default=30.0, help="WorkerShutdownTimeout for the run, seconds")
    parser.add_argument("--keep", action="store_true", help="leave a seed this run deployed in place")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    print(write_report(args.out, run(args.minutes, args.interval, args.timeout, args.keep), markdown), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

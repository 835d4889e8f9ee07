"""Trace overlay stop-first rolls under load, for a failure's cause (issue 17, goal 7).

Runs `overlay-roll-stop-first` of tests/lab/rolls.py N times on one overlay backend of 3 tasks, and
records, with wall-clock times, on the running lab:

* every request of the load (tests/lab/load.py) that failed;
* Swarm's view of the backend's tasks every 0.2 s (desired state, state, address on the network);
* on each LB node, every 0.2 s, the overlay sandbox's neighbour (ARP) and FDB entries, which Docker
  programs from its peer gossip, and the proxy container's own ARP cache;
* the proxy containers' logs (nginx's error log is on stdout) and the operator's log.

    .venv/bin/python bench/overlay_trace.py [--runs N] [--out DIR]

Run it under the shared lab lock. Writes DIR/trace.json and prints one line per roll.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import docker_api  # noqa: E402
from tests.lab import rolls  # noqa: E402
from tests.lab.cluster import load_lab  # noqa: E402
from tests.lab.load import Load  # noqa: E402
from tests.lab.seed_deployment import OPERATOR, PROXY, Seed  # noqa: E402

SAMPLE = 0.2
SLOW = 0.5  # a request this slow lost a SYN or its answer somewhere (TCP's first retransmit is at 1 s)
LOADS: list[Load] = []


class KeptLoad(Load):
    """rolls.run_change's load, kept for its per-request records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        LOADS.append(self)


def _dockerd_pids() -> dict[str, int]:
    state = json.loads((REPO / ".lab" / "state.json").read_text())
    return {n["name"]: int(n["dockerd_pid"]) for n in state["nodes"]}


def _sampler(cmd: list[str], out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=out.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _neigh_loop(pid: int, netid: str) -> list[str]:
    """The overlay sandbox of network `netid` on the node whose dockerd is `pid` (its mount namespace
    holds /run/docker/netns)."""
    script = (f"ns=/run/docker/netns/1-{netid[:10]}; while :; do echo \"@ $(date +%s.%N)\"; "
              f"nsenter --net=$ns ip neigh show; nsenter --net=$ns bridge fdb show | grep -v permanent.*self; "
              f"sleep {SAMPLE}; done")
    return ["nsenter", "-t", str(pid), "-m", "sh", "-c", script]


def _arp_loop(sock: str, container: str) -> list[str]:
    script = f"while :; do echo \"@ $(date +%s.%N)\"; cat /proc/net/arp; sleep {SAMPLE}; done"
    return ["docker", "-H", f"unix://{sock}", "exec", container, "sh", "-c", script]


class TaskWatch(threading.Thread):
    def __init__(self, seed: Seed, service: str, network: str) -> None:
        super().__init__(daemon=True)
        self.seed, self.service, self.network = seed, service, network
        self.rows: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.names = seed.node_names()

    def run(self) -> None:
        last: dict[str, tuple[str, str, str]] = {}
        while not self.stop.is_set():
            now = time.time()
            try:
                tasks = docker_api.tasks(self.seed.client(), filters={"service": self.service})
            except Exception as exc:  # a trace keeps going
                self.rows.append({"t": now, "error": str(exc)})
                tasks = []
            for t in tasks:
                addr = ""
                for a in t.get("NetworksAttachments") or []:
                    if a["Network"]["ID"] == self.network:
                        addr = (a.get("Addresses") or [""])[0]
                key = (t["DesiredState"], t["Status"]["State"], addr)
                if last.get(t["ID"]) != key:
                    last[t["ID"]] = key
                    self.rows.append({"t": now, "task": t["ID"][:12], "desired": key[0], "state": key[1],
                                      "addr": addr, "stamp": t["Status"]["Timestamp"],
                                      "node": self.names.get(t.get("NodeID", ""), "")})
            time.sleep(SAMPLE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--out", default="/tmp/h17o-trace")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lab = load_lab()
    pids = _dockerd_pids()
    spec = rolls.BY_NAME["overlay-roll-stop-first"]
    runs: list[dict[str, Any]] = []
    rolls.Load = KeptLoad  # type: ignore[attr-defined]
    started = time.time()
    with rolls.deployment(lab) as seed:
        seed.ensure_baseline(quiet=1, patience=10)
        with rolls.backend(seed, 3, rolls.TEST, overlay=True) as b:
            assert b.network
            netid = str(seed.client().networks.get(b.network).id)
            procs = []
            for node in lab.plain_workers:
                procs.append(_sampler(_neigh_loop(pids[node], netid), out / f"neigh-{node}.txt"))
            for node in lab.lb_nodes:
                procs.append(_sampler(_neigh_loop(pids[node], netid), out / f"neigh-{node}.txt"))
                procs.append(_sampler(_arp_loop(str(lab.node(node).sock), seed.container_on(node, PROXY)),
                                      out / f"arp-{node}.txt"))
            watch = TaskWatch(seed, b.name, netid)
            watch.start()
            try:
                for i in range(args.runs):
                    t0 = time.time()
                    r = rolls.run_change(b, spec, rolls.TEST)
                    fails = [vars(q) for q in LOADS[-1].snapshot() if not q.ok or q.done - q.sent > SLOW]
                    runs.append({"run": i, "t0": t0, "result": r.as_dict(), "failures": fails})
                    print(f"run {i}: {r.failed}/{r.total} failed {r.per_node} {r.notes} {r.error or ''}",
                          flush=True)
            finally:
                watch.stop.set()
                for p in procs:
                    p.terminate()
                    p.wait()
            since = str(int(started) - 5)
            for node in lab.lb_nodes:
                logs = subprocess.run(["docker", "-H", f"unix://{lab.node(node).sock}", "logs", "--timestamps",
                                       "--since", since, seed.container_on(node, PROXY)],
                                      capture_output=True, text=True, check=False)
                (out / f"proxy-{node}.log").write_text(logs.stdout + logs.stderr)
            oplog = seed.cli("service", "logs", "--timestamps", "--since", since, OPERATOR, check=False)
            (out / "operator.log").write_text(oplog)
            (out / "tasks.json").write_text(json.dumps(watch.rows, indent=1))
            proxies = {}
            for t in seed.running_tasks(PROXY):
                for a in t.get("NetworksAttachments") or []:
                    if a["Network"]["ID"] == netid:
                        proxies[t["ID"][:12]] = a["Addresses"]
            (out / "proxies.json").write_text(json.dumps(proxies))
    (out / "trace.json").write_text(json.dumps(runs, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

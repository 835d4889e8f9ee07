"""Convergence on the lab: from a task's `running` state to its route answering on every LB node.

`python bench/convergence.py [--trials 20] [--poll 3s]` (wrap it in `flock /tmp/swarmgate-lab.lock`):
the operator runs as a host process against the lab's Swarm with the seed's TOML (`PollInterval`
as given, the seed's 3 s by default). Each trial measures, per kind:

* new:      `create service` (1 task); its task's running → every LB node answers from it;
* scale:    1 → 2 tasks; the new task's running → every LB node has answered from it;
* restart:  the task's container is killed on its node; Swarm starts a new task; its running →
            every LB node answers from it (Swarm sends no event for this: it is seen by polling;
            without `--quiet`, the kill comes within the fast polls that follow the removal step);
* removal:  2 → 1 tasks; the scale command → the last time any LB node sent a request to the removed
            task (0 when none did after the command), with requests every 20 ms through each LB node.

"Running" is the task's `Status.Timestamp` once its state is `running` (the manager's clock; the lab's
nodes share the host's). Each LB node is asked every 20 ms, a new connection per request. Prints one
JSON object: p50/p95/max per kind, and every trial.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.lab import http  # noqa: E402
from tests.lab.cluster import Lab, ensure_lab_up  # noqa: E402
from tests.lab.operator_fixture import RunningOperator, clean_swarm, create_routed  # noqa: E402
from tests.support import host_port  # noqa: E402

PROBE = 0.02


def _stamp(text: str) -> float:
    # Docker prints nanoseconds; datetime takes microseconds.
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC).timestamp() + float(f"0.{frac or 0}")


def running_tasks(client: Any, service: str) -> dict[str, tuple[str, float]]:
    """Task ID → (`address:port`, running since) for the service's running tasks."""
    addrs = {n["ID"]: n["Status"]["Addr"] for n in client.api.nodes()}
    out = {}
    for task in client.api.tasks(filters={"service": service, "desired-state": "running"}):
        if task["Status"]["State"] != "running":
            continue
        if port := host_port(task, 8080):
            out[task["ID"]] = (f"{addrs[task['NodeID']]}:{port}", _stamp(task["Status"]["Timestamp"]))
    return out


def wait_new_task(client: Any, service: str, known: set[str], timeout: float = 60) -> tuple[str, str, float]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for task_id, (upstream, since) in running_tasks(client, service).items():
            if task_id not in known:
                return task_id, upstream, since
        time.sleep(0.05)
    raise TimeoutError(f"no new running task of {service}")


def answered_from(lab: Lab, host: str, upstream: str, timeout: float = 30) -> float:
    """Wall time by which every LB node has answered once from `upstream`."""
    pending = set(lab.lb_nodes)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for node in list(pending):
            try:
                r = http.get(lab.address(node), "/ping", host=host, timeout=1)
                if r.status == 200 and r.headers.get("x-upstream-addr") == upstream:
                    pending.discard(node)
            except OSError:
                pass
        time.sleep(PROBE)
    if pending:
        raise TimeoutError(f"{host}: {sorted(pending)} never answered from {upstream}")
    return time.time()


def last_chosen(lab: Lab, host: str, *, quiet: float = 3.0, timeout: float = 30) -> dict[str, float]:
    """Upstream → the last time an LB node sent a request to it, once the set of upstreams chosen has
    not changed for `quiet` seconds."""
    last: dict[str, float] = {}
    changed = start = time.time()
    while time.time() - changed < quiet and time.time() < start + timeout:
        for node in lab.lb_nodes:
            try:
                r = http.get(lab.address(node), "/ping", host=host, timeout=1)
            except OSError:
                continue
            for upstream in r.headers.get("x-upstream-addr", "").split(", "):
                if upstream:
                    if upstream not in last or time.time() - last[upstream] > quiet / 2:
                        changed = time.time()
                    last[upstream] = time.time()
        time.sleep(PROBE)
    return last


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--poll", default="3s", help="PollInterval of the operator (the seed's: 3s)")
    parser.add_argument("--quiet", type=float, default=0.0,
                        help="seconds to wait before the kill, so that the operator is back to resync polls "
                             "(it polls fast for 4 s after a change)")
    args = parser.parse_args()
    lab = ensure_lab_up()
    client = lab.manager_client()
    names = tuple(f"conv-{i}" for i in range(args.trials))
    results: dict[str, list[float]] = {"new": [], "scale": [], "restart": [], "removal": []}
    with tempfile.TemporaryDirectory() as tmp:
        clean_swarm(client, services=names, lab=lab)
        op = RunningOperator(lab, Path(tmp), poll=args.poll)
        op.start()
        try:
            for i, name in enumerate(names):
                host = f"{name}.conv.local"
                create_routed(client, name, {"com.docker.lb.hosts": host, "com.docker.lb.port": "8080"})
                task, upstream, since = wait_new_task(client, name, set())
                results["new"].append(answered_from(lab, host, upstream) - since)

                client.services.get(name).scale(2)
                _, upstream2, since = wait_new_task(client, name, {task})
                results["scale"].append(answered_from(lab, host, upstream2) - since)

                issued = time.time()
                client.services.get(name).scale(1)
                last = last_chosen(lab, host)
                gone = next(u for u in (upstream, upstream2) if u not in
                            {up for up, _ in running_tasks(client, name).values()})
                results["removal"].append(max(last.get(gone, issued) - issued, 0.0))

                time.sleep(args.quiet)
                (kept_id, (kept, _)), = running_tasks(client, name).items()
                node = next(n["Description"]["Hostname"] for n in client.api.nodes()
                            if n["Status"]["Addr"] == kept.split(":")[0])
                engine = lab.client(node)
                for container in engine.containers.list(
                    ignore_removed=True, filters={"label": f"com.docker.swarm.task.id={kept_id}"}):
                    container.kill()
                engine.close()
                _, upstream3, since = wait_new_task(client, name, {kept_id})
                results["restart"].append(answered_from(lab, host, upstream3) - since)
                client.services.get(name).remove()
                print(f"trial {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in results.items()), flush=True)
        finally:
            print(op.log_tail(5), file=sys.stderr)
            op.stop()
            clean_swarm(client, services=names, lab=lab)
    out = {"poll_interval": args.poll, "trials": args.trials, "quiet_before_kill": args.quiet,
           "lb_nodes": len(lab.lb_nodes),
           **{kind: {"p50": round(statistics.median(v), 2), "p95": round(pct(v, 0.95), 2), "max": round(max(v), 2),
                     "all": [round(x, 2) for x in v]} for kind, v in results.items()}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The partition question: what does a healed partition of an LB node cost, replicated vs global?

Two plain services, not routed by swarmgate, shaped like the proxy (host-mode port, pinned to the
`nodetype=loadbalancer` nodes, one task per LB node): `part-replicated` (replicated, one replica per
LB node, as swarmgate's proxy is today) and `part-global` (global mode). With steady load on lb-00's
port of each, lb-00 is cut off from every manager (iptables DROP in its network namespace, both
ways; the host, which sends the load, stays reachable), the cut is held, then healed. Counted per
service: failed requests during the cut and after the heal, and whether lb-00's task was replaced.

    .venv/bin/python bench/partition.py [--cut 60] [--after 45] [--heartbeat S] [--out PATH]

writes bench/partition-heartbeat<S>.{md,json} (S: the dispatcher heartbeat, 5 by default; the run sets
it with `docker swarm update --dispatcher-heartbeat` and puts Docker's 5 s back afterwards).

Run it under the shared lab lock: `flock /tmp/swarmgate-lab.lock .venv/bin/python bench/partition.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from tests.lab.cluster import Lab, load_lab  # noqa: E402
from tests.lab.load import Load  # noqa: E402

SERVICES = {"part-replicated": 18080, "part-global": 18081}
LB = "lb-00"


def create(client: docker.DockerClient, name: str, port: int, lb_count: int) -> None:
    mode = {"Global": {}} if name.endswith("global") else {"Replicated": {"Replicas": lb_count}}
    client.api.create_service(
        task_template={"ContainerSpec": {"Image": "swarmgate/demo:lab", "Env": [f"METADATA={name}"]},
                       "Placement": {"Constraints": ["node.labels.nodetype==loadbalancer"]},
                       "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000}},
        name=name, mode=mode,
        endpoint_spec={"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": port,
                                  "PublishMode": "host"}]})


def tasks_on(client: docker.DockerClient, service: str, node_id: str) -> list[str]:
    return [t["ID"] for t in client.api.tasks(filters={"service": service, "desired-state": "running"})
            if t.get("NodeID") == node_id and t["Status"]["State"] == "running"]


def iptables(lab: Lab, node: str, action: str, managers: list[str]) -> None:
    for address in managers:
        for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
            subprocess.run(["nsenter", f"--net=/run/netns/sglab-{node}", "iptables", action, chain, flag, address,
                            "-j", "DROP"], check=action == "-I", capture_output=True)


def node_state(client: docker.DockerClient, node_id: str) -> str:
    return str(client.api.inspect_node(node_id)["Status"]["State"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut", type=float, default=60.0, help="seconds lb-00 stays cut off")
    parser.add_argument("--after", type=float, default=45.0, help="seconds watched after the heal")
    parser.add_argument("--out", default=None, help="output path without suffix")
    parser.add_argument("--heartbeat", type=float, default=None,
                        help="the Swarm's dispatcher heartbeat period in s for this run (Docker's default: 5)")
    args = parser.parse_args()
    args.out = args.out or str(REPO / "bench" / f"partition-heartbeat{args.heartbeat or 5:g}")
    lab = load_lab()
    client = docker.DockerClient(base_url=lab.node(lab.managers[0]).sock, timeout=30)
    if args.heartbeat is not None:
        subprocess.run(["docker", "-H", lab.node(lab.managers[0]).sock, "swarm", "update", "--dispatcher-heartbeat",
                        f"{args.heartbeat:g}s"], check=True, capture_output=True)
    managers = [lab.address(m) for m in lab.managers]
    node_id = next(n["ID"] for n in client.api.nodes() if n["Description"]["Hostname"] == LB)
    result: dict[str, Any] = {"cut_s": args.cut, "after_s": args.after, "heartbeat_s": args.heartbeat or 5.0,
                              "services": {}}
    try:
        for name, port in SERVICES.items():
            create(client, name, port, len(lab.lb_nodes))
        deadline = time.monotonic() + 90
        while not all(tasks_on(client, s, node_id) for s in SERVICES):
            if time.monotonic() > deadline:
                raise TimeoutError("the services do not run on lb-00")
            time.sleep(0.5)
        before = {s: tasks_on(client, s, node_id) for s in SERVICES}
        loads = {s: Load({LB: lab.address(LB)}, hosts=("any",), rate=10, port=p) for s, p in SERVICES.items()}
        for load in loads.values():
            load.start()
        time.sleep(5)
        cut_at = time.time()
        iptables(lab, LB, "-I", managers)
        states = []
        while time.time() < cut_at + args.cut:
            with contextlib.suppress(docker.errors.APIError):
                states.append((round(time.time() - cut_at, 1), node_state(client, node_id)))
            time.sleep(2)
        healed_at = time.time()
        iptables(lab, LB, "-D", managers)
        time.sleep(args.after)
        for load in loads.values():
            load.stop()
        down = next((t for t, s in states if s == "down"), None)
        result["lb00_listed_down_after_s"] = down
        for s in SERVICES:
            during = loads[s].summary(since=cut_at, until=healed_at)[LB]
            after = loads[s].summary(since=healed_at)[LB]
            result["services"][s] = {
                "failed_during_cut": during.failed, "total_during_cut": during.total,
                "failed_after_heal": after.failed, "total_after_heal": after.total,
                "longest_gap_after_heal_s": after.longest_gap_s, "reasons_after_heal": after.reasons,
                "lb00_task_before": before[s], "lb00_task_after": tasks_on(client, s, node_id),
                "tasks_listed": [(t["ID"], t["DesiredState"], t["Status"]["State"], t["Status"].get("Err", ""))
                                 for t in client.api.tasks(filters={"service": s}) if t.get("NodeID") == node_id],
            }
    finally:
        iptables(lab, LB, "-D", managers)
        if args.heartbeat is not None:
            subprocess.run(["docker", "-H", lab.node(lab.managers[0]).sock, "swarm", "update",
                            "--dispatcher-heartbeat", "5s"], check=False, capture_output=True)
        for name in SERVICES:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_service(name)
        client.close()
    Path(args.out + ".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Healed partition of an LB node ({time.strftime('%Y-%m-%d')}, `bench/partition.py`)", "",
             f"Dispatcher heartbeat {result['heartbeat_s']:g} s. lb-00 cut off from every manager for "
             f"{args.cut:g} s (listed `down` after {result['lb00_listed_down_after_s']} s), then healed and watched "
             f"{args.after:g} s; 10 requests/s to lb-00's host port of each service.", "",
             "| mode | failed during the cut | failed after the heal | longest gap after the heal "
             "| lb-00's task replaced |",
             "|---|---|---|---|---|"]
    for s, r in result["services"].items():
        replaced = "yes" if r["lb00_task_before"] != r["lb00_task_after"] else "no"
        lines.append(f"| {s.removeprefix('part-')} | {r['failed_during_cut']} of {r['total_during_cut']} | "
                     f"{r['failed_after_heal']} of {r['total_after_heal']} | {r['longest_gap_after_heal_s']} s | "
                     f"{replaced} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

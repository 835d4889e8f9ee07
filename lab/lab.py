#!/usr/bin/env python3
"""swarmgate's local real-Swarm lab: several Docker engines on one machine, one Swarm over them.

    lab.py up [--managers M] [--workers W] [--lb L]   idempotent; rebuilds over stale leftovers
    lab.py down                                        removes everything `up` made
    lab.py images                                      (re)build images, load where not current
    lab.py status                                      health, size and memory of the running lab
    lab.py restart-engine NODE                         restart one node's dockerd on the same data
    lab.py stop-node NODE                              power cut: SIGKILL the node's whole pid namespace
    lab.py start-node NODE                             bring a stopped node back (same data, same Swarm node)

See lab/README.md for how it works and what it costs.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster
from common import CACHE_DIR, LAB_DIR, log


def _socks(state: dict[str, object]) -> dict[str, Path]:
    return {n.name: n.sock for n in cluster.nodes_from_state(state)}


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    size = {"managers": args.managers, "workers": args.workers, "lb": args.lb}
    cluster.plan(**size)  # validate before touching anything
    # Imported here: building images needs only the stdlib too, but keeps `down` light.
    import images

    state = cluster.load_state()
    if state and state.get("size") == size:
        # A node left stopped by `stop-node` (a fault run that was interrupted) comes back as itself
        # rather than costing a rebuild of the whole lab.
        nodes = cluster.nodes_from_state(state)
        for node in (n for n in nodes if n.stopped):
            log(f"{node.name} was stopped (stop-node): starting it")
            try:
                cluster.start_node(node)
                cluster.wait_node_state(nodes, node.name, "ready", timeout=120)
            except RuntimeError as e:
                log(f"{node.name}: {e}")
            _save(state, nodes)
        state = cluster.load_state()
    if state and cluster.healthy(state, size):
        log("lab already up and healthy; checking images")
    else:
        if state or _leftovers():
            log("tearing down a previous lab (stale, unhealthy or another size)")
            cluster.teardown()
        nodes = cluster.build(**size)
        state = cluster.load_state()
        assert state is not None
        log(f"nodes: {' '.join(f'{n.name}={n.address}' for n in nodes)}")
    t1 = time.monotonic()
    built = images.build_all()
    log(f"images ready in {time.monotonic() - t1:.1f} s")
    images.ensure_on_nodes(built, _socks(state))
    log(f"lab up in {time.monotonic() - t0:.1f} s; `. .lab/env` sets DOCKER_HOST")
    return 0


def _leftovers() -> bool:
    from common import BRIDGE, NETNS_PREFIX

    netns = Path("/run/netns")
    return (
        LAB_DIR.exists()
        or Path(f"/sys/class/net/{BRIDGE}").exists()
        or (netns.exists() and any(p.name.startswith(NETNS_PREFIX) for p in netns.iterdir()))
    )


def cmd_down(_: argparse.Namespace) -> int:
    t0 = time.monotonic()
    cluster.teardown()
    log(f"lab down in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_images(_: argparse.Namespace) -> int:
    import images

    state = cluster.load_state()
    built = images.build_all()
    for img in built:
        log(f"{img.name} {img.image_id[:19]} ({img.archive.stat().st_size / 2**20:.1f} MiB archive)")
    if state is None:
        log("no lab is up: images built into the cache only")
        return 0
    images.ensure_on_nodes(built, _socks(state))
    return 0


def _one_node(name: str) -> tuple[dict[str, object], list[cluster.Node], cluster.Node] | None:
    state = cluster.load_state()
    if state is None:
        log("no lab is up")
        return None
    nodes = cluster.nodes_from_state(state)
    node = next((n for n in nodes if n.name == name), None)
    if node is None:
        log(f"no node {name!r}; nodes: {' '.join(n.name for n in nodes)}")
        return None
    return state, nodes, node


def _save(state: dict[str, object], nodes: list[cluster.Node]) -> None:
    size = state["size"]
    assert isinstance(size, dict)
    cluster.write_state(nodes, size)


def cmd_restart_engine(args: argparse.Namespace) -> int:
    found = _one_node(args.node)
    if found is None:
        return 2
    state, nodes, node = found
    t0 = time.monotonic()
    cluster.restart_engine(node)
    _save(state, nodes)
    log(f"{node.name}: engine restarted in {time.monotonic() - t0:.1f} s")
    return 0


def cmd_stop_node(args: argparse.Namespace) -> int:
    found = _one_node(args.node)
    if found is None:
        return 2
    state, nodes, node = found
    if node.stopped:
        log(f"{node.name} is already stopped")
        return 0
    t0 = time.monotonic()
    cluster.stop_node(node)
    _save(state, nodes)
    log(f"{node.name}: killed (pid namespace, SIGKILL) in {time.monotonic() - t0:.2f} s; data kept")
    if args.wait_down:
        took = cluster.wait_node_state(nodes, node.name, "down", timeout=120)
        log(f"{node.name}: Swarm lists it down {took:.1f} s later")
    return 0


def cmd_start_node(args: argparse.Namespace) -> int:
    found = _one_node(args.node)
    if found is None:
        return 2
    state, nodes, node = found
    t0 = time.monotonic()
    cluster.start_node(node)
    _save(state, nodes)
    log(f"{node.name}: engine up in {time.monotonic() - t0:.1f} s")
    if not args.no_wait:
        took = cluster.wait_node_state(nodes, node.name, "ready", timeout=120)
        log(f"{node.name}: Swarm lists it ready {took:.1f} s later")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    state = cluster.load_state()
    if state is None:
        print("lab: down")
        return 1
    size = state["size"]
    assert isinstance(size, dict)
    ok = cluster.healthy(state, size)
    nodes = cluster.nodes_from_state(state)
    rss, pss = cluster.memory_kib(nodes)
    print(
        f"lab: {'healthy' if ok else 'UNHEALTHY'} size={size} memory: "
        f"PSS {pss / 1024:.0f} MiB, RSS {rss / 1024:.0f} MiB (sums over the lab's processes)"
    )
    for n in nodes:
        print(f"  {n.name:8} {n.role:8} {n.address:15} {'lb' if n.lb else ''}")
    return 0 if ok else 1


def main() -> int:
    if os.geteuid() != 0:
        print("lab.py needs root (namespaces, bridge, iptables)", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument("--managers", type=int, default=1)
    up.add_argument("--workers", type=int, default=3, help="workers in total, LB nodes included")
    up.add_argument("--lb", type=int, default=2, help="how many workers are lb-NN load-balancer nodes")
    up.set_defaults(fn=cmd_up)
    sub.add_parser("down", help="remove everything the lab made").set_defaults(fn=cmd_down)
    sub.add_parser("images", help="rebuild/refresh the lab images").set_defaults(fn=cmd_images)
    sub.add_parser("status", help="health, size, memory").set_defaults(fn=cmd_status)
    restart = sub.add_parser("restart-engine", help="restart one node's dockerd (keeps its Swarm state)")
    restart.add_argument("node")
    restart.set_defaults(fn=cmd_restart_engine)
    stop = sub.add_parser("stop-node", help="kill a node at once, like a power cut (keeps its data)")
    stop.add_argument("node")
    stop.add_argument("--wait-down", action="store_true", help="return once a manager lists it down")
    stop.set_defaults(fn=cmd_stop_node)
    start = sub.add_parser("start-node", help="start a stopped node again on its data (same Swarm node)")
    start.add_argument("node")
    start.add_argument("--no-wait", action="store_true", help="do not wait until a manager lists it ready")
    start.set_defaults(fn=cmd_start_node)
    args = p.parse_args()
    # Several sessions share this tree (tests of other engineers bring the lab up through the
    # fixture): up/down/images run one at a time. The lock lives outside .lab/, which down deletes.
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(CACHE_DIR.parent / "lab.lock", "w")  # noqa: SIM115 (held until exit)
    if args.cmd != "status":
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another lab.py is running; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        rc: int = args.fn(args)
        return rc
    except RuntimeError as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())

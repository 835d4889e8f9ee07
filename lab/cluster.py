"""Nodes of the lab: network namespaces on one bridge, one dockerd per node, one Swarm over them.

Each node is a launcher process `nsenter --net=<netns> unshare --uts --mount --pid ...`: the node gets
its own network (netns), hostname (UTS), mount table (private /run, so /var/run/docker.sock inside
its containers is its own engine) and pid namespace. The pid namespace is what makes `down` exact:
killing the namespace's first process makes the kernel kill every process in it (dockerd,
containerd, shims, containers), and membership is checked by namespace inode, never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from common import (
    BRIDGE,
    ENV_FILE,
    FIRST_NODE_HOST,
    FW_COMMENT,
    HOST_ADDR,
    LAB_DIR,
    LOG_DIR,
    NETNS_PREFIX,
    NODES_DIR,
    PREFIX_LEN,
    RUN_DIR,
    STATE_FILE,
    SUBNET_PREFIX,
    VETH_PREFIX,
    all_pids,
    children,
    docker,
    log,
    ns_inode,
    proc_start_time,
    pss_kib,
    rss_kib,
    run,
)

NODE_INIT = Path(__file__).resolve().parent / "node-init.sh"
# Swarm's pool for overlay networks (ingress included): the other half of the benchmarking range.
SWARM_ADDR_POOL = "198.19.0.0/16"


@dataclass
class Node:
    name: str
    role: str  # "manager" | "worker"
    address: str
    lb: bool
    launcher_pid: int = 0
    launcher_start: int = 0
    pidns: int = 0  # inode of the node's pid namespace
    dockerd_pid: int = 0  # host-side pid (the pidfile inside the node holds the namespace's own)
    stopped: bool = False  # `lab.py stop-node` killed it; `start-node` brings it back

    @property
    def netns(self) -> str:
        return NETNS_PREFIX + self.name

    @property
    def veth(self) -> str:
        return VETH_PREFIX + self.name

    @property
    def sock(self) -> Path:
        return RUN_DIR / self.name / "docker.sock"


def plan(managers: int, workers: int, lb: int) -> list[Node]:
    if managers < 1 or workers < 0 or not 0 <= lb <= workers:
        raise SystemExit("need managers >= 1 and 0 <= lb <= workers")
    names = [(f"mgr-{i}", "manager", False) for i in range(managers)]
    names += [(f"lb-{i:02d}", "worker", True) for i in range(lb)]
    names += [(f"wrk-{i}", "worker", False) for i in range(workers - lb)]
    return [
        Node(name, role, f"{SUBNET_PREFIX}{FIRST_NODE_HOST + i}", is_lb) for i, (name, role, is_lb) in enumerate(names)
    ]


# ---------------------------------------------------------------- state files


def load_state() -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(STATE_FILE.read_text())
        return data
    except (OSError, ValueError):
        return None


def nodes_from_state(state: dict[str, object]) -> list[Node]:
    raw = state.get("nodes", [])
    assert isinstance(raw, list)
    return [Node(**{k: v for k, v in n.items() if k in Node.__dataclass_fields__}) for n in raw]


def write_state(nodes: list[Node], size: dict[str, int]) -> None:
    state = {
        "size": size,
        "bridge": BRIDGE,
        "host_addr": HOST_ADDR,
        "docker_host": f"unix://{nodes[0].sock}",
        "cgroup_roots": cgroup_roots(),
        "nodes": [asdict(n) | {"sock": str(n.sock), "netns": n.netns} for n in nodes],
    }
    STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")
    lines = [
        "# swarmgate lab (written by lab/lab.py up; `. .lab/env`)",
        f"export DOCKER_HOST=unix://{nodes[0].sock}",
        f"export LAB_HOST_ADDR={HOST_ADDR}",
        f"export LAB_BRIDGE={BRIDGE}",
        f'export LAB_NODES="{" ".join(n.name for n in nodes)}"',
        f'export LAB_MANAGERS="{" ".join(n.name for n in nodes if n.role == "manager")}"',
        f'export LAB_LB_NODES="{" ".join(n.name for n in nodes if n.lb)}"',
    ]
    for n in nodes:
        key = n.name.replace("-", "_")
        lines.append(f"export LAB_NODE_{key}={n.address}")
        lines.append(f"export LAB_SOCK_{key}=unix://{n.sock}")
    ENV_FILE.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- network


def setup_bridge() -> None:
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "addr", "add", f"{HOST_ADDR}/{PREFIX_LEN}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    # Bridged node<->node traffic crosses the host FORWARD chain (br_netfilter); an engine in the
    # host namespace may have set its policy to DROP, so accept the lab bridge explicitly.
    run(
        [
            "iptables",
            "-I",
            "FORWARD",
            "-i",
            BRIDGE,
            "-o",
            BRIDGE,
            "-m",
            "comment",
            "--comment",
            FW_COMMENT,
            "-j",
            "ACCEPT",
        ]
    )


def setup_node_net(node: Node) -> None:
    run(["ip", "netns", "add", node.netns])
    run(["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns])
    run(["ip", "link", "set", node.veth, "master", BRIDGE, "up"])
    ns = ["ip", "-n", node.netns]
    run([*ns, "link", "set", "lo", "up"])
    run([*ns, "addr", "add", f"{node.address}/{PREFIX_LEN}", "dev", "eth0"])
    run([*ns, "link", "set", "eth0", "up"])
    run([*ns, "route", "add", "default", "via", HOST_ADDR])


# ---------------------------------------------------------------- engines


def start_engine(node: Node) -> None:
    (RUN_DIR / node.name).mkdir(parents=True, exist_ok=True)
    (NODES_DIR / node.name).mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    logf = open(LOG_DIR / f"{node.name}.log", "ab")  # noqa: SIM115 (handed to the child)
    # nsenter, not `ip netns exec`: the latter remounts /sys and dockerd then finds no cgroups.
    cmd = [
        "nsenter",
        f"--net=/run/netns/{node.netns}",
        "unshare",
        "--uts",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--propagation",
        "private",
        "/bin/sh",
        str(NODE_INIT),
        node.name,
        str(NODES_DIR / node.name),
        str(RUN_DIR / node.name),
    ]
    # A new session: a Ctrl-C in `make` must not take the lab down with it.
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True)
    logf.close()
    node.launcher_pid = proc.pid
    node.launcher_start = proc_start_time(proc.pid) or 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{node.name}: engine exited; see {LOG_DIR / node.name}.log")
        kids = children(proc.pid)
        if kids and not node.pidns:
            node.pidns = ns_inode(kids[0], "pid") or 0
        if node.sock.exists() and docker(node.sock, "version", "-f", "{{.Server.Version}}", check=False):
            # launcher (unshare) -> node's pid 1 (docker-init) -> dockerd
            inits = children(proc.pid)
            engines = children(inits[0]) if inits else []
            node.dockerd_pid = engines[0] if engines else 0
            return
        time.sleep(0.2)
    raise RuntimeError(f"{node.name}: engine did not answer within 60 s; see {LOG_DIR / node.name}.log")


def restart_engine(node: Node, *, timeout: float = 30) -> None:
    """Stop one node's dockerd the way a service restart would (SIGTERM) and start it again on the
    same data: the node keeps its Swarm membership. Its containers end with it (pid namespace)."""
    if node.dockerd_pid and Path(f"/proc/{node.dockerd_pid}").exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.dockerd_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = node.launcher_pid and proc_start_time(node.launcher_pid) == node.launcher_start
        if not alive or _zombie(node.launcher_pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.launcher_pid, signal.SIGKILL)
    node.pidns = 0
    start_engine(node)


def stop_node(node: Node, *, timeout: float = 10) -> None:
    """A power cut: SIGKILL every process of the node's pid namespace at once (dockerd, containerd,
    shims, containers; the kernel also kills whatever is left once the namespace's pid 1 dies).
    The data root, the Swarm state and the netns/veth stay, so `start_node` brings back the same
    node. Membership is by namespace inode and recorded pids, never by process name."""
    pids = {p for p in all_pids() if node.pidns and ns_inode(p, "pid") == node.pidns}
    if node.launcher_pid and proc_start_time(node.launcher_pid) == node.launcher_start:
        pids.add(node.launcher_pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_zombie(p) for p in pids if Path(f"/proc/{p}").exists()):
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"{node.name}: processes survived SIGKILL: {sorted(pids)}")
    # A host-side socket file left behind would make clients wait on a dead listener: remove it.
    with contextlib.suppress(FileNotFoundError):
        node.sock.unlink()
    node.pidns = node.dockerd_pid = 0
    node.stopped = True


def start_node(node: Node) -> None:
    """Start a stopped node's engine on its existing data root: it rejoins as the same Swarm node."""
    if node.launcher_pid and proc_start_time(node.launcher_pid) == node.launcher_start and not node.stopped:
        raise RuntimeError(f"{node.name} is running")
    node.pidns = 0
    start_engine(node)
    node.stopped = False


def wait_node_state(nodes: list[Node], name: str, state: str, *, timeout: float) -> float:
    """Seconds until a live manager lists node `name` in Swarm state `state` (ready/down)."""
    t0 = time.monotonic()
    while True:
        for mgr in (n for n in nodes if n.role == "manager" and not n.stopped and n.name != name):
            seen = swarm_nodes([mgr])
            if name in seen and seen[name][1] == state:
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{name} not {state} within {timeout:.0f} s")
        time.sleep(0.25)


def form_swarm(nodes: list[Node]) -> None:
    first = nodes[0]
    # Overlay, VIP and ingress addresses come from the lab's own benchmarking range (RFC 2544), like
    # its node addresses: Swarm's default pool (10.0.0.0/8) would send test traffic outside the lab.
    docker(first.sock, "swarm", "init", "--advertise-addr", first.address,
           "--default-addr-pool", SWARM_ADDR_POOL, "--default-addr-pool-mask-length", "24")
    mtoken = docker(first.sock, "swarm", "join-token", "-q", "manager")
    wtoken = docker(first.sock, "swarm", "join-token", "-q", "worker")
    remote = f"{first.address}:2377"
    # Managers one at a time (each join changes the raft membership); workers all at once.
    for n in nodes[1:]:
        if n.role == "manager":
            docker(n.sock, "swarm", "join", "--token", mtoken, "--advertise-addr", n.address, remote)
    workers = [n for n in nodes if n.role == "worker"]
    with ThreadPoolExecutor(max(1, len(workers))) as pool:
        list(
            pool.map(
                lambda n: docker(n.sock, "swarm", "join", "--token", wtoken, "--advertise-addr", n.address, remote),
                workers,
            )
        )
    # A join returns before every manager lists the node: label only once all are ready.
    wait_ready(nodes, timeout=60)
    for n in nodes:
        if n.lb:
            docker(first.sock, "node", "update", "--label-add", "nodetype=loadbalancer", n.name)


def swarm_nodes(nodes: list[Node]) -> dict[str, tuple[str, str, str]]:
    """hostname -> (role, status, labels) as the first manager sees them."""
    out = docker(nodes[0].sock, "node", "ls", "-q", check=False, timeout=20)
    if not out:
        return {}
    fmt = "{{.Description.Hostname}}|{{.Spec.Role}}|{{.Status.State}}|{{json .Spec.Labels}}"
    text = docker(nodes[0].sock, "node", "inspect", "-f", fmt, *out.split(), check=False, timeout=20)
    result = {}
    for line in text.splitlines():
        host, role, status, labels = line.split("|", 3)
        result[host] = (role, status, labels)
    return result


def wait_ready(nodes: list[Node], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = swarm_nodes(nodes)
        if len(seen) == len(nodes) and all(s[1] == "ready" for s in seen.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"swarm not ready: {seen}")
        time.sleep(0.5)


def healthy(state: dict[str, object], size: dict[str, int]) -> bool:
    """True if the recorded lab is the requested size and every node and the Swarm are fine."""
    if state.get("size") != size:
        return False
    nodes = nodes_from_state(state)
    for n in nodes:
        if proc_start_time(n.launcher_pid) != n.launcher_start:
            return False
        if docker(n.sock, "info", "-f", "{{.Swarm.LocalNodeState}}", check=False, timeout=10) != "active":
            return False
    seen = swarm_nodes(nodes)
    for n in nodes:
        if n.name not in seen or seen[n.name][:2] != (n.role, "ready"):
            return False
        if n.lb != ("loadbalancer" in seen[n.name][2]):
            return False
    return len(seen) == len(nodes)


def build(managers: int, workers: int, lb: int) -> list[Node]:
    nodes = plan(managers, workers, lb)
    for d in (RUN_DIR, NODES_DIR, LOG_DIR):
        d.mkdir(parents=True, exist_ok=True)
    setup_bridge()
    for n in nodes:
        setup_node_net(n)
    t = time.monotonic()
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(start_engine, nodes))
    log(f"{len(nodes)} engines up in {time.monotonic() - t:.1f} s")
    # Record pids before forming the swarm: a failure from here on must still be cleanable.
    write_state(nodes, {"managers": managers, "workers": workers, "lb": lb})
    t = time.monotonic()
    form_swarm(nodes)
    log(f"swarm formed in {time.monotonic() - t:.1f} s")
    return nodes


# ---------------------------------------------------------------- teardown


def lab_pids(nodes: list[Node]) -> set[int]:
    """Every process that belongs to the lab, by namespace membership and recorded pids only."""
    pidns = {n.pidns for n in nodes if n.pidns}
    netns = set()
    for path in Path("/run/netns").glob(NETNS_PREFIX + "*"):
        with contextlib.suppress(OSError):
            netns.add(path.stat().st_ino)  # inode of the nsfs bind mount = the namespace's id
    found = set()
    me = os.getpid()
    host_net = ns_inode(me, "net")
    for pid in all_pids():
        if pid == me:
            continue
        if ns_inode(pid, "pid") in pidns or (ns_inode(pid, "net") in netns and ns_inode(pid, "net") != host_net):
            found.add(pid)
    for n in nodes:
        if n.launcher_pid and proc_start_time(n.launcher_pid) == n.launcher_start:
            found.add(n.launcher_pid)
    return found


def memory_kib(nodes: list[Node]) -> tuple[int, int]:
    """(RSS sum, PSS sum) over every lab process: RSS over-counts shared pages, PSS does not."""
    pids = lab_pids(nodes)
    return sum(rss_kib(p) for p in pids), sum(pss_kib(p) for p in pids)


def teardown() -> None:
    state = load_state()
    nodes = nodes_from_state(state) if state else []
    pids = lab_pids(nodes)
    if pids:
        log(f"stopping {len(pids)} lab processes")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Wait until they are gone; zombies count as gone once their reaper (pid 1 of this machine,
    # for launchers whose `lab.py up` has exited) had a moment to collect them.
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if Path(f"/proc/{p}").exists()}
        if all(_zombie(p) for p in pids) and time.monotonic() > deadline - 8:
            break
        time.sleep(0.05)
    if [p for p in pids if not _zombie(p)]:
        log(f"warning: processes still alive: {sorted(pids)}")
    # Mounts live in the nodes' own mount namespaces and vanish with them; anything under .lab
    # that shows up in the host's table (a crashed helper, a manual mount) is unmounted too.
    for mnt in sorted(_host_mounts_under(LAB_DIR), key=len, reverse=True):
        run(["umount", "-l", mnt], check=False)
    for path in Path("/run/netns").glob(NETNS_PREFIX + "*") if Path("/run/netns").exists() else []:
        run(["ip", "netns", "delete", path.name], check=False)
    for link in _links(VETH_PREFIX):
        run(["ip", "link", "delete", link], check=False)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        run(["ip", "link", "delete", BRIDGE], check=False)
    rule = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", FW_COMMENT, "-j", "ACCEPT"]
    while run(["iptables", "-C", *rule], check=False).returncode == 0:
        run(["iptables", "-D", *rule], check=False)
    _remove_cgroups(state)
    if LAB_DIR.exists():
        shutil.rmtree(LAB_DIR, ignore_errors=True)
        if LAB_DIR.exists():
            run(["rm", "-rf", str(LAB_DIR)], check=False)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _host_mounts_under(root: Path) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt == str(root) or mnt.startswith(str(root) + "/"):
            out.append(mnt)
    return out


def _links(prefix: str) -> list[str]:
    return [p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix)]


def _remove_cgroups(state: dict[str, object] | None) -> None:
    """Removes the per-node cgroup parents (node-init.sh sets --cgroup-parent sglab-NODE)."""
    roots = state.get("cgroup_roots", []) if state else []
    assert isinstance(roots, list)
    # Without a state file (lost, or a crash before it was written) our own cgroups are the guess.
    for root in sorted(set(roots) | set(cgroup_roots())):
        base = Path(root)
        if not base.exists():
            continue
        for d in sorted(base.glob("sglab-*"), reverse=True):
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()


def cgroup_roots() -> list[str]:
    """Folders under which our engines create their sglab-NODE cgroup parents: a relative
    --cgroup-parent is resolved against the engine's own cgroup, inherited from this process.
    Over-inclusion is harmless: teardown only removes empty sglab-* folders."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        if right.split()[0] in ("cgroup", "cgroup2"):
            mounts.append(Path(left.split()[4]))
    paths = {line.split(":", 2)[2].lstrip("/") for line in Path("/proc/self/cgroup").read_text().splitlines()}
    return sorted({str(m / p) for m in mounts for p in paths if (m / p).is_dir()})

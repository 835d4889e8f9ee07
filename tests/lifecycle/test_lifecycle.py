"""The lab's life cycle: `down` leaves nothing behind, `up` recovers from a killed lab.

Runs last (`make test` runs it separately) because it takes the lab down; it ends with the lab down.
Processes are identified the way the lab itself does: by the recorded pids (with their start
times, so a reused pid is not mistaken for ours) and by membership in the nodes' pid namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
LAB = [sys.executable, str(REPO / "lab" / "lab.py")]
LAB_DIR = REPO / ".lab"
SIZE = ["--managers", "1", "--workers", "3", "--lb", "2"]


def _start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def _running(pid: int, start: int | None) -> bool:
    """Same process still there and not a zombie (a zombie's reaping is its parent's business)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start


def _ns(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


@dataclass(frozen=True)
class Snapshot:
    """What a running lab consists of, as seen from the host."""

    processes: dict[int, int | None]  # pid -> start time
    pid_namespaces: set[int]
    cgroup_roots: list[str]
    dockerd_pids: list[int]


def snapshot() -> Snapshot:
    state = json.loads((LAB_DIR / "state.json").read_text())
    pidns = {n["pidns"] for n in state["nodes"]}
    assert all(pidns), "every node records its pid namespace"
    procs = {p: _start_time(p) for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _ns(p, "pid") in pidns}
    for n in state["nodes"]:
        procs[n["launcher_pid"]] = n["launcher_start"]
    dockerd = [n["dockerd_pid"] for n in state["nodes"]]
    assert all(dockerd) and all(_ns(p, "pid") in pidns for p in dockerd)
    return Snapshot(procs, pidns, state["cgroup_roots"], dockerd)


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=300)


def assert_nothing_left(before: Snapshot) -> None:
    alive = [p for p, start in before.processes.items() if _running(p, start)]
    assert not alive, f"lab processes survived down: {alive}"
    in_ns = [
        p
        for p in map(int, filter(str.isdigit, os.listdir("/proc")))
        if _ns(p, "pid") in before.pid_namespaces and _running(p, _start_time(p))
    ]
    assert not in_ns, f"processes left in the nodes' pid namespaces: {in_ns}"
    netns = Path("/run/netns")
    assert not (netns.exists() and [p.name for p in netns.iterdir() if p.name.startswith("sglab-")])
    links = [p.name for p in Path("/sys/class/net").iterdir()]
    assert "sglab0" not in links
    assert not [link for link in links if link.startswith("sgl-")]
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
    assert "swarmgate-lab" not in rules and "sglab0" not in rules
    assert not LAB_DIR.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(LAB_DIR) not in mounts
    for root in before.cgroup_roots:
        assert not list(Path(root).glob("sglab-*")), f"cgroups left under {root}"


def wait_dead(pids: list[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists()]:
            return
        time.sleep(0.1)
    raise AssertionError(f"still alive: {pids}")


def test_down_leaves_nothing_and_up_recovers_from_a_killed_lab() -> None:
    # The suite's own lab when a healthy one runs (any size: `make test`'s 8 nodes): `down` is proven on
    # it as well as on a fresh one, without first rebuilding it at this test's size.
    if lab("status").returncode != 0:
        assert lab("up", *SIZE).returncode == 0

    # 1. A clean `down` removes every process, namespace, link, rule, cgroup and file.
    before = snapshot()
    started = time.monotonic()
    down = lab("down")
    assert down.returncode == 0, down.stderr
    assert time.monotonic() - started < 15
    assert_nothing_left(before)
    assert lab("down").returncode == 0  # idempotent on nothing

    # 2. Engines killed with SIGKILL (a session that died): `up` over the leftovers is healthy.
    assert lab("up", *SIZE).returncode == 0
    killed = snapshot()
    for pid in killed.dockerd_pids:
        os.kill(pid, signal.SIGKILL)
    wait_dead(killed.dockerd_pids)
    assert lab("status").returncode != 0  # the lab knows it is broken
    up = lab("up", *SIZE)
    assert up.returncode == 0, up.stderr
    status = lab("status")
    assert status.returncode == 0 and "healthy" in status.stdout, status.stdout
    survivors = [p for p, start in killed.processes.items() if _running(p, start)]
    assert not survivors, f"processes of the killed lab survived the recovery: {survivors}"

    # 3. Lost state file (processes still running): `down` still finds the lab by its namespaces.
    lost = snapshot()
    (LAB_DIR / "state.json").unlink()
    assert lab("down").returncode == 0
    assert_nothing_left(lost)

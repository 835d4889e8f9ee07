"""Shared constants and small helpers of the lab (stdlib only: `lab.py down` runs without the venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = REPO / ".lab"  # all live lab state; `down` removes it entirely
RUN_DIR = LAB_DIR / "run"  # host-side sockets and pidfiles, one folder per node
NODES_DIR = LAB_DIR / "nodes"  # per-node docker data roots
LOG_DIR = LAB_DIR / "logs"
STATE_FILE = LAB_DIR / "state.json"
ENV_FILE = LAB_DIR / "env"
# Image build cache: outlives `down` on purpose so a re-up does not rebuild (git-ignored, documented).
CACHE_DIR = REPO / ".cache" / "lab-images"

BRIDGE = "sglab0"
# 198.18.0.0/15 is the benchmarking range (RFC 2544): no Docker address pool hands it out.
SUBNET_PREFIX = "198.18.0."
HOST_ADDR = SUBNET_PREFIX + "1"
PREFIX_LEN = 24
FIRST_NODE_HOST = 11
NETNS_PREFIX = "sglab-"  # netns names; the prefix marks them as the lab's own
VETH_PREFIX = "sgl-"  # host side of each node's veth pair (IFNAMSIZ is 16)
FW_COMMENT = "swarmgate-lab"  # tags our iptables rule so `down` deletes exactly it

IMAGES = ("swarmgate/nginx:lab", "swarmgate/demo:lab", "swarmgate/operator:lab")


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Runs a command; on failure raises with its stderr so lab errors are readable."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        input=input.decode() if input is not None else None,
        capture_output=capture,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def docker_cli() -> str:
    # Prefer Debian's client (same release as the engines); any client negotiates API 1.41 anyway.
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("docker client not found: run `make deps`")


def docker(sock: str | Path, *args: str, check: bool = True, timeout: float = 120) -> str:
    """Runs the docker CLI against one lab engine (never against DOCKER_HOST of the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(LAB_DIR / "docker-cli")  # keep the user's ~/.docker untouched
    proc = subprocess.run(
        [docker_cli(), "-H", f"unix://{sock}", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on {sock} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a pid, used to tell our process from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces/parentheses: fields start after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


def ns_inode(pid: int | str, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (eight dockerds share one binary) counted once overall."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

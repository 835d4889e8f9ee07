"""The running local real-Swarm lab as a value: its nodes, their engines and addresses, read from the
files `lab/lab.py up` writes (`.lab/state.json`, `.lab/env`).

    lab = load_lab()                      # or ensure_lab_up(), which runs `lab.py up` first
    mgr = lab.manager_client()            # docker.DockerClient of mgr-0 (Swarm API)
    lb = lab.client("lb-00")              # the engine of one node
    url = f"http://{lab.address('wrk-0')}:{port}/ping"
    subprocess.run(["docker", "service", "ls"], env=lab.env)   # DOCKER_HOST = mgr-0

A plain module, so benches and harnesses outside pytest import it; tests/lab/conftest.py only turns
it into fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[2]
STATE_FILE = REPO / ".lab" / "state.json"
ENV_FILE = REPO / ".lab" / "env"
# Operators the tests run as host processes keep the channel key they create here (a task reads its
# mounted secret instead), and so do `swarmgate plan`/`status` run from the host: one private file
# on the lab's host, shared by every operator a test starts, as a standby needs. Set on import, so
# a bench's operators and CLI runs get it just as the tests' do.
CHANNEL_KEY = REPO / ".lab" / "operator-channel.key"
os.environ.setdefault("SWARMGATE_CHANNEL_KEY", str(CHANNEL_KEY))


@dataclass(frozen=True)
class LabNode:
    name: str  # also the node's hostname and its Swarm node name
    role: str  # "manager" | "worker"
    address: str  # Node.Status.Addr; reachable from the host
    lb: bool  # carries nodetype=loadbalancer
    sock: str  # "unix://..." of the node's engine, as the host reaches it


@dataclass(frozen=True)
class Lab:
    nodes: tuple[LabNode, ...]
    host_addr: str  # the host's address on the lab bridge (what nodes see as the client)
    env: dict[str, str] = field(repr=False)  # os.environ + .lab/env: DOCKER_HOST, LAB_NODE_*, ...

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    @property
    def managers(self) -> list[str]:
        return [n.name for n in self.nodes if n.role == "manager"]

    @property
    def workers(self) -> list[str]:
        return [n.name for n in self.nodes if n.role == "worker"]

    @property
    def lb_nodes(self) -> list[str]:
        return [n.name for n in self.nodes if n.lb]

    @property
    def plain_workers(self) -> list[str]:
        return [n.name for n in self.nodes if n.role == "worker" and not n.lb]

    def node(self, name: str) -> LabNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def address(self, name: str) -> str:
        return self.node(name).address

    def client(self, name: str) -> docker.DockerClient:
        """A new Docker SDK client for one node's engine (close it, or use it briefly)."""
        return docker.DockerClient(base_url=self.node(name).sock, timeout=60)

    def manager_client(self) -> docker.DockerClient:
        """Client of the first manager: the Swarm API (services, nodes, configs, secrets)."""
        return self.client(self.managers[0])


def _read_env() -> dict[str, str]:
    env = dict(os.environ)
    for line in ENV_FILE.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip('"')
    return env


def load_lab() -> Lab:
    state = json.loads(STATE_FILE.read_text())
    nodes = tuple(
        LabNode(n["name"], n["role"], n["address"], bool(n["lb"]), f"unix://{n['sock']}") for n in state["nodes"]
    )
    return Lab(nodes=nodes, host_addr=state["host_addr"], env=_read_env())


def ensure_lab_up() -> Lab:
    """Runs `lab.py up` at the running lab's size (default size if none runs). On a healthy lab
    that only checks health and reloads images whose content changed, e.g. swarmgate/operator:lab
    after an edit of swarmgate/, so tests always run the working tree's operator."""
    cmd = [sys.executable, str(REPO / "lab" / "lab.py"), "up"]
    if STATE_FILE.exists():
        size = json.loads(STATE_FILE.read_text())["size"]
        cmd += ["--managers", str(size["managers"]), "--workers", str(size["workers"]), "--lb", str(size["lb"])]
    subprocess.run(cmd, check=True)
    return load_lab()

"""The seed deployment on the lab, seen and changed only through the lab's own engines (does I/O:
Docker API and CLI, lab.py, scripts/demo.sh, HTTP to lab nodes).

`Seed` is what tests/lab/faults.py drives: it deploys the seed's scenario the seed's way, tells
whether it is converged and at rest (Docker's event stream over a window, never a sleep), stops and
starts nodes, kills containers through their node's own engine, and times a new route until every
LB node answers for it. Every object it makes is named `fault-*`, so `restore` finds them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors

from tests import docker_api
from tests.lab import http
from tests.lab.cluster import REPO, Lab, load_lab
from tests.support import events_between, wait_for

OPERATOR = "interlock"
PROXY = "interlock-proxy"
CONFIG = "service.interlock.conf"
DEMO_HOST = "demo.local"
LAB_PY = REPO / "lab" / "lab.py"
DEMO_SH = REPO / "scripts" / "demo.sh"
SEED_TOML = REPO / "lab" / "seed-config.toml"


def swarm_time(stamp: str) -> float:
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


class Seed:
    """The seed deployment on the lab, seen and changed only through the lab's own engines."""

    def __init__(self, lab: Lab | None = None, *, log: Callable[[str], None] | None = None) -> None:
        self.lab = lab or load_lab()
        self.stopped: set[str] = set()
        self.frozen: dict[str, int] = {}  # node -> dockerd pid under SIGSTOP
        self.tainted = False  # the last scenario left routing in doubt: redeploy before the next one
        self._client: docker.DockerClient | None = None
        self._client_node = ""
        self.log = log or (lambda msg: print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr,
                                             flush=True))
        self._counter = int(time.time()) % 100000

    # -- clients

    def manager_name(self) -> str:
        return next(m for m in self.lab.managers if m not in self.stopped and m not in self.frozen)

    def client(self) -> docker.DockerClient:
        """The Swarm API through a manager that is up (mgr-0 may be the one a scenario stopped)."""
        name = self.manager_name()
        if self._client is None or self._client_node != name:
            if self._client is not None:
                self._client.close()
            self._client = docker.DockerClient(base_url=self.lab.node(name).sock, timeout=30)
            self._client_node = name
        return self._client

    def env(self) -> dict[str, str]:
        return {**self.lab.env, "DOCKER_HOST": self.lab.node(self.manager_name()).sock}

    def cli(self, *args: str, node: str | None = None, stdin: str | None = None, check: bool = True) -> str:
        """The docker CLI against a live manager, or against one node's own engine."""
        env = self.env()
        if node is not None:
            env["DOCKER_HOST"] = self.lab.node(node).sock
        proc = subprocess.run(["docker", *args], env=env, input=stdin, capture_output=True, text=True,
                              timeout=120, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def lab_py(self, *args: str) -> None:
        proc = subprocess.run([sys.executable, str(LAB_PY), *args], capture_output=True, text=True, timeout=300,
                              check=False)
        self.log(proc.stderr.strip().replace("\n", " | "))
        if proc.returncode != 0:
            raise RuntimeError(f"lab.py {' '.join(args)} failed: {proc.stderr.strip()}")

    def name(self, kind: str) -> str:
        self._counter += 1
        return f"fault-{kind}-{self._counter}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- what runs where

    def node_names(self) -> dict[str, str]:
        return {n["ID"]: n["Description"]["Hostname"] for n in self.client().api.nodes()}

    def running_tasks(self, service: str) -> list[dict[str, Any]]:
        return [t for t in docker_api.tasks(self.client(), filters={"service": service, "desired-state": "running"})
                if t["Status"]["State"] == "running"]

    def operator_tasks(self) -> list[dict[str, Any]]:
        return self.running_tasks(OPERATOR)

    def proxy_state(self) -> tuple[dict[str, str], int]:
        """Running proxy task ID -> node name, and the proxy service's spec version."""
        names = self.node_names()
        tasks = {t["ID"]: names.get(t["NodeID"], t["NodeID"]) for t in self.running_tasks(PROXY)}
        version = int(docker_api.inspect_service(self.client(), PROXY)["Version"]["Index"])
        return tasks, version

    def container_on(self, node: str, service: str) -> str:
        out = self.cli("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}", node=node)
        ids = out.split()
        if not ids:
            raise RuntimeError(f"no container of {service} runs on {node}")
        return ids[0]

    def agent_serves_host(self, node: str, host: str, *more: str) -> bool:
        """The proxy's agent on `node` says it serves (new workers only) the live config, which names
        `host` (and `more`): until then a request may still meet an old worker of the last reload."""
        out = self.cli("exec", self.container_on(node, PROXY), "sh", "-c",
                       "cat /var/lib/swarmgate/status* && echo '--' && cat /etc/nginx/nginx.conf", node=node)
        status, _, config = out.partition("\n--\n")
        words = status.split("\n", 1)[0].split()  # swarmgate/3 status TASK ok DIGEST TERM SEQ
        digest = hashlib.sha256((config + "\n").encode()).hexdigest()
        named = all(f" {h}" in config for h in (host, *more))
        return len(words) == 7 and words[3] == "ok" and words[4] == digest and named

    def why_not(self, node: str, host: str, *, metadata: str | None = None) -> str:
        """'' when `node` answers 200 for `host` (from `metadata`'s task), else what it did instead."""
        try:
            r = http.get(self.lab.address(node), "/ping", host=host, timeout=1.5)
        except OSError as exc:
            return type(exc).__name__
        if r.status != 200:
            return f"HTTP {r.status} upstream {r.headers.get('x-upstream-addr', '-')}"
        if metadata is not None and f'"metadata":"{metadata}"' not in r.body.decode(errors="replace"):
            return "another backend"
        return ""

    def answers(self, node: str, host: str, *, metadata: str | None = None) -> bool:
        try:
            r = http.get(self.lab.address(node), "/ping", host=host, timeout=1.5)
        except OSError:
            return False
        return r.status == 200 and (metadata is None or f'"metadata":"{metadata}"' in r.body.decode(errors="replace"))

    # -- deployment

    def deploy(self, timeout: float = 180) -> None:
        """`scripts/demo.sh up`, then `converged()`. With DEMO_DETACH=1 the script skips the CLI's
        5-second watch of each service's tasks (three of them: ~15 s a deployment); the proof of a
        deployment here is `converged()` (and, in the fault and roll runs, a quiet event window).
        Bounded all the same, and its process group killed: an operator that cannot start would
        hold the script's wait for its proxy."""
        t0 = time.monotonic()
        self._demo_sh("up", timeout, env={"DEMO_DETACH": "1"})
        wait_for(self.converged, timeout=120, what="the seed deployment converged")
        self.log(f"seed deployed (scripts/demo.sh up) and converged in {time.monotonic() - t0:.1f} s")

    def undeploy(self, *, check: bool = False) -> None:
        """`scripts/demo.sh down`; with `check` it must succeed, which it does only if it removed something."""
        if check:
            self._demo_sh("down", 180)
            return
        with contextlib.suppress(RuntimeError):
            self._demo_sh("down", 180, check=False)

    def _demo_sh(self, verb: str, timeout: float, *, check: bool = True, env: dict[str, str] | None = None) -> None:
        proc = subprocess.Popen([str(DEMO_SH), verb], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, env={**os.environ, **(env or {})})
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"demo.sh {verb} did not finish within {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            raise RuntimeError(f"demo.sh {verb} failed: {err.strip()[-2000:]}")

    def converged(self) -> bool:
        """One operator task runs; one proxy task runs on each LB node and the service is not
        rolling; every LB node answers demo.local with 200."""
        c = self.client()
        spec = docker_api.inspect_service(c, OPERATOR)
        if spec["Spec"]["Mode"].get("Replicated", {}).get("Replicas") != 1 or len(self.operator_tasks()) != 1:
            return False
        proxy = docker_api.inspect_service(c, PROXY)
        if (proxy.get("UpdateStatus") or {}).get("State") in ("updating", "rollback_started"):
            return False
        tasks, _ = self.proxy_state()
        if sorted(tasks.values()) != sorted(self.lab.lb_nodes):
            return False
        return all(self.answers(n, DEMO_HOST) for n in self.lab.lb_nodes)

    def owned_writes(self, since: float, until: float, *, ignore: tuple[str, ...] = ("fault-",)) -> list[str]:
        """Docker's record of writes to services, configs and secrets in [since, until], without the
        harness's own objects. Blocks until `until` has passed: the window is read as it happens. The
        bounds go to the API to the nanosecond, so the read ends when the window does."""
        events = events_between(self.client(), int(since * 10**9), int(until * 10**9), ("service", "config", "secret"))
        out = []
        for e in events:
            name = (e.get("Actor", {}).get("Attributes") or {}).get("name", "")
            if e.get("Action") in {"create", "update", "remove"} and not name.startswith(ignore):
                out.append(f"{e['Type']} {e['Action']} {name}")
        return out

    def ensure_baseline(self, *, quiet: float, patience: float) -> None:
        """A converged seed deployment at rest: redeploy only if it is broken (the previous scenario
        may have left it so; that is then in its result, not in the next one's)."""
        for node in sorted(self.stopped):
            self.start_node(node)
        try:
            present = bool(self.client().services.list(filters={"name": OPERATOR}))
        except docker.errors.APIError:
            present = False
        if present and not self.tainted:
            with contextlib.suppress(TimeoutError):
                wait_for(self.converged, timeout=patience, what="converged seed deployment")
        if not present or self.tainted or not self.converged():
            why = "routing in doubt after the last scenario" if self.tainted and present else "missing or not converged"
            self.log(f"seed deployment {why}: redeploying")
            self.tainted = False
            self.undeploy()
            self.deploy()
            wait_for(self.converged, timeout=120, what="converged seed deployment after redeploy")
        # At rest: no owned object written during a short window (event stream, not a sleep).
        for _ in range(10):
            since = time.time()
            writes = self.owned_writes(since, since + quiet)
            if not writes and self.converged():
                return
            self.log(f"not at rest yet: {writes[:5]}")
        raise TimeoutError("the seed deployment does not come to rest")

    # -- lab verbs

    def stop_node(self, node: str) -> None:
        self.stopped.add(node)
        self.lab_py("stop-node", node)

    def start_node(self, node: str) -> None:
        self.lab_py("start-node", node)
        self.stopped.discard(node)

    def freeze_engine(self, node: str) -> None:
        """SIGSTOP the node's dockerd (its containers keep running under containerd)."""
        state = json.loads((REPO / ".lab" / "state.json").read_text())
        pid = int(next(n["dockerd_pid"] for n in state["nodes"] if n["name"] == node))
        os.kill(pid, signal.SIGSTOP)
        self.frozen[node] = pid

    def thaw_engine(self, node: str) -> None:
        """SIGCONT, then wait until Swarm lists every node ready again (the thawed manager rejoins)."""
        pid = self.frozen.pop(node, None)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        wait_for(lambda: all(n["Status"]["State"] == "ready" for n in self.client().api.nodes()),
                 timeout=120, what="every node ready after the thaw")

    def restore(self, *, undeploy: bool = True) -> None:
        """Whatever happened: every stopped node back, the seed deployment (unless `undeploy` is False:
        tests/lab/shared_seed.py may keep it for the next module) and fault objects gone."""
        for node in sorted(self.frozen):
            self.thaw_engine(node)
        for node in sorted(self.stopped):
            with contextlib.suppress(RuntimeError):
                self.start_node(node)
        with contextlib.suppress(Exception):
            for svc in self.client().services.list():
                if svc.name.startswith("fault-"):
                    docker_api.remove(svc)
        if undeploy:
            self.undeploy()
        with contextlib.suppress(Exception):
            for cfg in self.client().configs.list():
                if cfg.name.startswith("fault-"):
                    with contextlib.suppress(docker.errors.APIError):
                        cfg.remove()
        for node in self.lab.names:
            with contextlib.suppress(RuntimeError):
                tags = self.cli("images", "--format", "{{.Repository}}:{{.Tag}}", "swarmgate/operator", node=node)
                for tag in tags.split():
                    if ":fault-" in tag:
                        self.cli("rmi", tag, node=node, check=False)
        self.close()

    # -- steps shared by scenarios

    def wait_new_operator(self, old: set[str], timeout: float) -> dict[str, Any]:
        task = wait_for(lambda: next((t for t in self.operator_tasks() if t["ID"] not in old), None),
                        timeout=timeout, what="new running operator task")
        return task

    def create_route(self, name: str, labels: dict[str, str] | None = None) -> None:
        docker_api.create_service(self.client(),
            task_template={"ContainerSpec": {"Image": "swarmgate/demo:lab", "Env": [f"METADATA={name}"]}},
            name=name, labels=labels or {"com.docker.lb.hosts": f"{name}.local", "com.docker.lb.port": "8080"},
            mode={"Replicated": {"Replicas": 1}},
            endpoint_spec={"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]})

    def new_route(self, timeout: float) -> tuple[str, float, float | None, set[str]]:
        """A NEW routed service, timed from its creation until every LB node answers for it:
        (name, created, served or None, LB nodes that never answered)."""
        name = self.name("route")
        created = time.time()
        self.create_route(name)
        pending = set(self.lab.lb_nodes)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            pending = {n for n in pending if not self.answers(n, f"{name}.local", metadata=name)}
            if pending:
                time.sleep(0.2)
        return name, created, (None if pending else time.time()), pending

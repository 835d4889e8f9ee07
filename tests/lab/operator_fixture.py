"""The operator as a host process against the lab's Swarm, for integration tests.

`RunningOperator` starts `swarmgate -D run -c FILE` with a seed-like config whose `DockerURL` is the
first manager's socket and whose `ListenAddr` is the host's address on the lab bridge (for the
tests' own reads of /v1/status). Nothing tells the proxies where the operator is: it pushes to them,
over the LB nodes' own addresses. `clean_swarm` removes everything the operator and the tests made,
so each test starts from an empty Swarm (with `lab`, also what each LB node saved of its last config).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import docker.errors

from tests import docker_api
from tests.lab import http
from tests.lab.cluster import REPO, Lab
from tests.support import free_port, host_port, wait_for

PROXY = "interlock-proxy"
CHANNEL_SECRET = "swarmgate-channel"
STATE_VOLUME = f"{PROXY}-state"
OWNED = {"label": "swarmgate.managed-by=swarmgate"}
ACME_SECRET_PREFIX = "swarmgate-acme-"

SEED_CONFIG = REPO / "lab" / "seed-config.toml"


def seed_config(*, listen: str, docker_url: str, poll: str, extension_extra: str = "", top_extra: str = "") -> str:
    """The seed's TOML, pointed at the lab from the host: the manager's socket and, for ListenAddr,
    the host's bridge address; `top_extra`: top-level keys of swarmgate's own (ACMEDirectory, ...)."""
    text = SEED_CONFIG.read_text()
    for key, value in (("ListenAddr", listen), ("DockerURL", docker_url), ("PollInterval", poll)):
        text, found = re.subn(rf"^{key} = .*$", f'{key} = "{value}"', text, count=1, flags=re.M)
        assert found, f"{key} missing from {SEED_CONFIG}"
    text = text.replace("    TargetSSLPort = 443\n", "    TargetSSLPort = 443\n" + extension_extra, 1)
    # The operator runs on the lab's host, which is not a Swarm node: the proxies must let it in.
    host = listen.rsplit(":", 1)[0]
    return top_extra + f'ControlSources = ["{host}"]\n' + text



class RunningOperator:
    def __init__(self, lab: Lab, workdir: Path, *, extension_extra: str = "", poll: str = "1s",
                 top_extra: str = "") -> None:
        self.lab = lab
        self.port = free_port(lab.host_addr)
        self.listen = f"{lab.host_addr}:{self.port}"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(seed_config(listen=self.listen, docker_url=lab.node(lab.managers[0]).sock,
                                                poll=poll, extension_extra=extension_extra, top_extra=top_extra))
        self.log_path = workdir / "operator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, env: dict[str, str] | None = None) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "swarmgate"), "-D", "run", "-c", str(self.config_path)],
            stdout=log, stderr=log, env={**os.environ, **(env or {})})
        wait_for(self._healthy, timeout=15, what="operator /healthz")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}: {self.log_tail()}")
        with urllib.request.urlopen(f"http://{self.listen}/healthz", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.listen}/v1/status", timeout=5) as r:
            data: dict[str, Any] = json.load(r)
            return data

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def converged(self) -> bool:
        """Every live proxy serves the current config, and the expected number of them report."""
        extension = self.status().get("clusters", {}).get("default")  # keyed by extension name
        return bool(extension and extension.get("all_current"))

    def wait_full_passes(self, count: int, *, timeout: float = 30) -> None:
        """Return once this operator has run `count` whole reconcile passes from now (see `wait_full_passes`)."""
        host, port = self.listen.rsplit(":", 1)
        wait_full_passes(host, int(port), count, timeout=timeout)


def successful_passes(address: str, port: int) -> int:
    """The operator's own count of successful reconcile passes (`swarmgate_reconcile_total` on /metrics)."""
    for line in http.get(address, "/metrics", port=port).body.decode().splitlines():
        if line.startswith('swarmgate_reconcile_total{result="success"} '):
            return int(float(line.split()[-1]))
    return 0


def operator_endpoints(client: docker.DockerClient, services: tuple[str, ...]) -> dict[str, tuple[str, int]]:
    """Running operator task ID -> (its node's address, the host port Swarm published for its 8080): where
    an operator run as a Swarm service the seed's way (`--publish mode=host,target=8080`) answers
    /metrics, /v1/status and /v1/leader."""
    addrs = {n["ID"]: n["Status"]["Addr"] for n in client.api.nodes()}
    found = {}
    for service in services:
        for task in docker_api.running_tasks(client, service):
            if port := host_port(task, 8080):
                found[task["ID"]] = (addrs[task["NodeID"]], port)
    return found


def wait_full_passes(address: str, port: int, count: int, *, timeout: float = 30) -> None:
    """Return once the operator at `address:port` has begun and finished `count` passes after this call.

    One pass may be under way when this is called; it is not counted. This is the length of an event
    window that proves the operator left something alone: it looked `count` times and did nothing.
    """
    start = successful_passes(address, port)
    wait_for(lambda: successful_passes(address, port) >= start + count + 1, timeout=timeout,
             what=f"{count} more reconcile passes of the operator at {address}:{port}")


def clean_swarm(client: docker.DockerClient, *, services: tuple[str, ...] = (), lab: Lab | None = None,
                proxies: tuple[str, ...] = (PROXY,)) -> None:
    """Remove the proxies, the given services, every owned config and the token secret; with `lab`,
    also each proxy's state volume on each LB node, so the next proxy starts from the bootstrap."""
    # Each proxy's certificate courier (`<proxy>-certs`) goes with it.
    # One listing, not one per name (the scale test names 300 services).
    present = {svc.name: svc for svc in client.services.list()}
    for name in (*services, *proxies, *(f"{p}-certs" for p in proxies)):
        if name in present:
            docker_api.remove(present[name])
    # A config stays "in use" until the service that mounts it is gone; removal retries until then.
    for cfg in client.configs.list(filters=OWNED):
        _remove_when_unused(cfg.remove)
    # The channel key, every generation of it (swarmgate-channel, swarmgate-channel-N).
    for secret in client.secrets.list(filters={"name": CHANNEL_SECRET}):
        if secret.name == CHANNEL_SECRET or secret.name.startswith(f"{CHANNEL_SECRET}-"):
            _remove_when_unused(secret.remove)
    # ACME certificates the operator stored (owned secrets named swarmgate-acme-*).
    for secret in client.secrets.list(filters={**OWNED, "name": ACME_SECRET_PREFIX}):
        if secret.name.startswith(ACME_SECRET_PREFIX):
            _remove_when_unused(secret.remove)
    if lab is not None:
        forget_proxy_volumes(lab, proxies)


def forget_proxy_volumes(lab: Lab, proxies: tuple[str, ...] = (PROXY,)) -> None:
    """Each proxy's state and certificate volumes on each LB node (once its service is gone), so the
    next proxy there starts from the bootstrap rather than from the last deployment's served config."""
    for name in lab.lb_nodes:
        for proxy in proxies:
            _forget_served_config(lab, name, f"{proxy}-state")
            _forget_served_config(lab, name, f"{proxy}-certs")


def _forget_served_config(lab: Lab, name: str, volume: str = STATE_VOLUME) -> None:
    """Best effort: the state volume of one LB node. A stopping proxy container holds it for a few
    seconds, and exited task containers hold it until they are removed; a volume left behind only
    means the next proxy there starts from an old config, which the operator's first push replaces."""
    node = lab.client(name)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for container in node.containers.list(all=True, ignore_removed=True, filters={"volume": volume}):
                if container.status != "running":
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
            try:
                node.volumes.get(volume).remove()
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                time.sleep(0.1)  # a stopping proxy lets go of it any moment
    finally:
        node.close()


def _remove_when_unused(remove: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the tasks that mount it go any moment


@contextmanager
def operator(lab: Lab, workdir: Path, *, extension_extra: str = "", services: tuple[str, ...] = (),
             env: dict[str, str] | None = None, top_extra: str = "") -> Iterator[RunningOperator]:
    """A started operator over a clean Swarm; everything it and the test made is removed after."""
    client = lab.manager_client()
    clean_swarm(client, services=services, lab=lab)
    op = RunningOperator(lab, workdir, extension_extra=extension_extra, top_extra=top_extra)
    try:
        op.start(env=env)
        yield op
    except BaseException:
        print(f"--- operator log (last lines) ---\n{op.log_tail(80)}")
        raise
    finally:
        op.stop()
        clean_swarm(client, services=services, lab=lab)
        client.close()


# -- routed services, as a user creates them, and what the proxies answer for them -------------


def create_routed(client: docker.DockerClient, name: str, labels: dict[str, str], *, replicas: int = 1) -> str:
    """A service published the seed's way: `--publish mode=host,target=8080`, no fixed host port."""
    return docker_api.create_service(
        client, task_template={"ContainerSpec": {"Image": "swarmgate/demo:lab", "Env": [f"METADATA={name}"]}},
        name=name, labels=labels, mode={"Replicated": {"Replicas": replicas}},
        endpoint_spec={"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]})


def route_and_wait(lab: Lab, client: docker.DockerClient, name: str, host: str) -> None:
    """`create_routed` with `host`, then wait until every LB node answers it from the service's tasks."""
    create_routed(client, name, {"com.docker.lb.hosts": host, "com.docker.lb.port": "8080"})
    wait_for(lambda: running_upstreams(client, name) or None, timeout=60, what=f"a running {name} task")
    wait_for(lambda: answers_everywhere(lab, host, running_upstreams(client, name)), timeout=60,
             what=f"{host} on every LB node")


def running_upstreams(client: docker.DockerClient, service: str) -> set[str]:
    """`node address:host port` of every running task of the service, from the Docker API."""
    addrs = {n["ID"]: n["Status"]["Addr"] for n in client.api.nodes()}
    found = set()
    for task in docker_api.tasks(client, filters={"service": service, "desired-state": "running"}):
        if task["Status"]["State"] != "running":
            continue
        if port := host_port(task, 8080):
            found.add(f"{addrs[task['NodeID']]}:{port}")
    return found


def proxy_tasks(client: docker.DockerClient) -> dict[str, str]:
    """Running proxy task ID → node ID."""
    return {t["ID"]: t["NodeID"] for t in docker_api.running_tasks(client, PROXY)}


def upstreams_seen(lab: Lab, host: str, *, requests: int = 12) -> dict[str, set[str]]:
    """Per LB node, the `x-upstream-addr` values of a burst of requests (nginx round-robins)."""
    seen: dict[str, set[str]] = {}
    for node in lab.lb_nodes:
        for _ in range(requests):
            r = http.get(lab.address(node), "/ping", host=host)
            assert r.status == 200, (node, r.status, r.body[:200])
            seen.setdefault(node, set()).add(r.headers["x-upstream-addr"])
    return seen


def answers_everywhere(lab: Lab, host: str, expected: set[str]) -> bool:
    return all(s == expected for s in upstreams_seen(lab, host).values())

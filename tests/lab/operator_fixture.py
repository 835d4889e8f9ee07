"""The operator as a host process against the lab's Swarm, for integration tests.

`RunningOperator` starts `swarmgate -D run -c FILE` with a seed-like config whose `DockerURL` is the
first manager's socket and whose `ListenAddr`/`EndpointOverride` is the host's address on the lab
bridge, so the agents in the proxy tasks on the LB nodes reach it. `clean_swarm` removes everything
the operator and the tests made, so each test starts from an empty Swarm.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from tests.lab.conftest import REPO, Lab

PROXY = "interlock-proxy"
TOKEN_SECRET = "swarmgate-proxy-token"
OWNED = {"label": "swarmgate.managed-by=swarmgate"}
T = TypeVar("T")

SEED_TOML = """\
ListenAddr = "{listen}"
DockerURL = "{docker_url}"
PollInterval = "{poll}"
EndpointOverride = "{listen}"

[Extensions]
  [Extensions.default]
    ProxyImage = "swarmgate/nginx:lab"
    ProxyServiceName = "interlock-proxy"
    ProxyConfigPath = "/etc/nginx/nginx.conf"
    PublishMode = "host"
    PublishedPort = 80
    TargetPort = 80
    PublishedSSLPort = 443
    TargetSSLPort = 443
{extension_extra}
    [Extensions.default.Config]
      User = "nginx"
      PidPath = "/var/run/proxy.pid"
      WorkerProcesses = 1
      RlimitNoFile = 65535
      MaxConnections = 2048
"""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2, what: str = "") -> T:
    """Poll until `check()` returns something truthy; fail with `what` and the last error."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the thing waited for may not exist yet
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}" + (f": {last}" if last else ""))


class RunningOperator:
    def __init__(self, lab: Lab, workdir: Path, *, extension_extra: str = "", poll: str = "1s") -> None:
        self.lab = lab
        self.port = free_port(lab.host_addr)
        self.listen = f"{lab.host_addr}:{self.port}"
        self.config_path = workdir / "config.toml"
        self.config_path.write_text(SEED_TOML.format(
            listen=self.listen, docker_url=lab.node(lab.managers[0]).sock, poll=poll,
            extension_extra=extension_extra))
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
        cluster = self.status().get("clusters", {}).get("default")
        return bool(cluster and cluster.get("all_current"))


def clean_swarm(client: docker.DockerClient, *, services: tuple[str, ...] = ()) -> None:
    """Remove the proxy, the given services, every owned config and the token secret."""
    for name in (*services, PROXY):
        for svc in client.services.list(filters={"name": name}):
            if svc.name == name:
                svc.remove()
    # A config stays "in use" until the service that mounts it is gone; removal retries until then.
    for cfg in client.configs.list(filters=OWNED):
        _remove_when_unused(cfg.remove)
    for secret in client.secrets.list(filters={"name": TOKEN_SECRET}):
        _remove_when_unused(secret.remove)


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
            time.sleep(0.5)


@contextmanager
def operator(lab: Lab, workdir: Path, *, extension_extra: str = "", services: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> Iterator[RunningOperator]:
    """A started operator over a clean Swarm; everything it and the test made is removed after."""
    client = lab.manager_client()
    clean_swarm(client, services=services)
    op = RunningOperator(lab, workdir, extension_extra=extension_extra)
    try:
        op.start(env=env)
        yield op
    except BaseException:
        print(f"--- operator log (last lines) ---\n{op.log_tail(80)}")
        raise
    finally:
        op.stop()
        clean_swarm(client, services=services)
        client.close()

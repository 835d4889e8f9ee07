"""End to end: the real agent.sh under busybox sh, real nginx, real endpoint, loopback only.

The PATH holds only busybox applets and nginx, as in a stock nginx image, so `wget` is busybox's.
Every process started here runs in its own session and is killed by process group on teardown.
"""

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest

from swarmgate.operator.delivery.endpoint import EndpointServer, serve
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.token import TokenCheck, new_token, token_digest

BUSYBOX = Path("/bin/busybox")
NGINX = Path("/usr/sbin/nginx")
AGENT = Path(str(resources.files("swarmgate.operator.delivery").joinpath("agent.sh")))
CLUSTER = "default"

pytestmark = pytest.mark.skipif(not (BUSYBOX.exists() and NGINX.exists()), reason="needs busybox and nginx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_conf(tmp: Path, port: int, body: str, *, status: int = 200, extra: str = "") -> str:
    temp = " ".join(f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                    "uwsgi", "scgi"))
    return (
        f"user root;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nworker_processes 1;\n"
        f"events {{ worker_connections 64; }}\n"
        f"http {{\n  access_log off;\n  {temp}\n  {extra}\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ return {status} \"{body}\\n\"; }} }}\n}}\n"
    )


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Proxy:
    """One agent + nginx on loopback, with the endpoint it polls."""

    tmp: Path
    port: int
    token: str
    store: ProxyState = field(default_factory=ProxyState)
    server: EndpointServer | None = None
    endpoint_port: int = 0
    agent: subprocess.Popen[bytes] | None = None

    def start_endpoint(self) -> None:
        self.server = serve(f"127.0.0.1:{self.endpoint_port}", self.store, TokenCheck(token_digest(self.token)),
                            hold_seconds=1.0)
        self.endpoint_port = self.server.port

    def stop_endpoint(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server = None

    def start_agent(self) -> None:
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir()
        for applet in subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                                     check=True).stdout.split():
            (bin_dir / applet).symlink_to(BUSYBOX)
        (bin_dir / "nginx").symlink_to(NGINX)
        (self.tmp / "token").write_text(self.token + "\n")
        (self.tmp / "bootstrap.conf").write_text(nginx_conf(self.tmp, self.port, "bootstrap", status=503))
        env = {
            "PATH": str(bin_dir),
            "SWARMGATE_ENDPOINT": f"http://127.0.0.1:{self.endpoint_port}",
            "SWARMGATE_CLUSTER": CLUSTER,
            "SWARMGATE_TOKEN_FILE": str(self.tmp / "token"),
            "SWARMGATE_CONFIG_PATH": str(self.tmp / "nginx.conf"),
            "SWARMGATE_BOOTSTRAP_PATH": str(self.tmp / "bootstrap.conf"),
            "SWARMGATE_TASK_ID": "task1", "SWARMGATE_NODE_ID": "node1", "SWARMGATE_NODE_HOSTNAME": "lb-1",
            "SWARMGATE_POLL_TIMEOUT": "5",
        }
        with open(self.tmp / "agent.log", "wb") as log:
            self.agent = subprocess.Popen([str(BUSYBOX), "sh", str(AGENT)], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return (self.tmp / "agent.log").read_text()

    def get(self) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as r:
                return r.status, r.read().decode().strip()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode().strip()

    def master_pid(self) -> int:
        return int((self.tmp / "nginx.pid").read_text())

    def publish(self, body: str, **kw: object) -> str:
        text = nginx_conf(self.tmp, self.port, body, **kw)  # type: ignore[arg-type]
        digest = digest_of(text)
        self.store.publish(CLUSTER, text, digest)
        return digest

    def served_digest(self) -> str:
        return {p.task: p for p in self.store.proxies(CLUSTER)}["task1"].served_digest


def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    p = Proxy(tmp_path, free_port(), new_token())
    p.start_endpoint()
    p.start_agent()
    try:
        eventually(lambda: p.get()[0] == 503, "the bootstrap config to serve")
        yield p
    finally:
        if p.agent is not None:
            # The agent's own session: agent, nginx and its workers, wget, even if the agent is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.agent.pid, signal.SIGKILL)
            p.agent.wait()
        if p.server is not None:
            p.server.shutdown()


def test_bootstrap_serves_503_until_a_config_is_published(proxy: Proxy) -> None:
    assert proxy.get() == (503, "bootstrap")


def test_published_configs_are_reloaded_in_place_and_reported(proxy: Proxy) -> None:
    master = proxy.master_pid()
    for n in range(3):
        digest = proxy.publish(f"v{n}")
        eventually(lambda n=n: proxy.get() == (200, f"v{n}"), f"v{n} to serve")  # type: ignore[misc]
        eventually(lambda d=digest: proxy.served_digest() == d, "the report")  # type: ignore[misc]
        assert proxy.store.all_current(CLUSTER)
    assert proxy.master_pid() == master  # hitless: reloads, never a new master
    rec = proxy.store.proxies(CLUSTER)[0]
    assert (rec.node, rec.hostname, rec.last_status) == ("node1", "lb-1", "ok")


def test_invalid_config_is_never_loaded_and_its_error_is_reported(proxy: Proxy) -> None:
    good = proxy.publish("good")
    # "ok" is reported once nginx -t passed and the master got its HUP; new workers follow within ms.
    eventually(lambda: proxy.served_digest() == good and proxy.get() == (200, "good"), "the good config")
    bad = proxy.publish("bad", extra="no_such_directive on;")
    eventually(lambda: proxy.store.proxies(CLUSTER)[0].rejected_digest == bad, "the error report")
    rec = proxy.store.proxies(CLUSTER)[0]
    assert rec.served_digest == good and rec.last_status == "error"
    assert 'unknown directive "no_such_directive"' in rec.last_error
    assert proxy.get() == (200, "good")
    assert nginx_conf(proxy.tmp, proxy.port, "good") == (proxy.tmp / "nginx.conf").read_text()
    time.sleep(1.5)  # the rejected digest is not fetched again in a loop
    assert "rejected" in proxy.log() and proxy.log().count("rejected") == 1
    fixed = proxy.publish("fixed")
    eventually(lambda: proxy.get() == (200, "fixed"), "the fixed config")
    eventually(lambda: proxy.served_digest() == fixed, "the fixed report")


def test_operator_away_keeps_nginx_serving_and_next_publish_arrives(proxy: Proxy) -> None:
    proxy.publish("before")
    eventually(lambda: proxy.get() == (200, "before"), "the first config")
    master = proxy.master_pid()
    proxy.stop_endpoint()
    time.sleep(3)  # polls fail: connection refused, backoff 1, 2 s
    assert proxy.get() == (200, "before")
    assert proxy.log().count("operator unreachable") == 1  # one line per state change
    proxy.store = ProxyState()  # a restarted operator starts empty
    proxy.start_endpoint()
    after = proxy.publish("after")
    eventually(lambda: proxy.get() == (200, "after"), "the config published after the restart", 15)
    eventually(lambda: proxy.served_digest() == after, "the report after the restart")
    assert proxy.master_pid() == master


def test_sigquit_stops_nginx_gracefully_and_the_agent_exits(proxy: Proxy) -> None:
    assert proxy.agent is not None
    master = proxy.master_pid()
    proxy.agent.send_signal(signal.SIGQUIT)
    assert proxy.agent.wait(timeout=5) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    assert "stopped" in proxy.log()


def test_agent_exits_non_zero_when_nginx_dies(proxy: Proxy) -> None:
    assert proxy.agent is not None
    os.kill(proxy.master_pid(), signal.SIGKILL)
    assert proxy.agent.wait(timeout=5) != 0
    assert "nginx exited unexpectedly" in proxy.log()


def test_wrong_token_is_refused_and_nginx_keeps_serving(proxy: Proxy) -> None:
    (proxy.tmp / "token").write_text("not-the-token\n")
    eventually(lambda: "401 Unauthorized" in proxy.log(), "a refused poll")
    proxy.publish("unreachable")
    time.sleep(1.5)
    assert proxy.get() == (503, "bootstrap")
    (proxy.tmp / "token").write_text(proxy.token)  # a rotated secret needs no agent restart
    eventually(lambda: proxy.get() == (200, "unreachable"), "the config once the token is right")


def test_no_request_is_dropped_across_ten_reloads(proxy: Proxy) -> None:
    first = proxy.publish("r0")
    # Old workers keep accepting for ~0.1 s after a reload: let the bootstrap's 503 workers go first.
    eventually(lambda: proxy.served_digest() == first and all(proxy.get() == (200, "r0") for _ in range(50)),
               "the first config alone")
    done = threading.Event()
    outcomes: dict[str, int] = {}

    def hammer() -> None:  # sequential, loopback only, bounded
        for _ in range(20_000):
            if done.is_set():
                return
            try:
                code, body = proxy.get()
                key = str(code) if code == 200 else f"{code} {body}"
            except OSError as err:
                key = type(err).__name__
            outcomes[key] = outcomes.get(key, 0) + 1

    client = threading.Thread(target=hammer)
    client.start()
    try:
        for n in range(1, 11):
            digest = proxy.publish(f"r{n}")
            eventually(lambda d=digest: proxy.served_digest() == d, f"reload {n}")  # type: ignore[misc]
    finally:
        time.sleep(0.2)
        done.set()
        client.join()
    print(f"requests during 10 reloads: {outcomes}")
    assert set(outcomes) == {"200"} and outcomes["200"] > 100

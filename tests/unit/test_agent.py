"""End to end on loopback: the real agent.sh under busybox sh, real nginx, the real pusher.

The PATH holds only busybox applets and nginx, as in a stock nginx image. The nginx configs are the
tests' own small ones plus swarmgate's real control server (rendered by `control_server`, pointed at
this test's directory and at 127.0.0.1). The pusher is driven one round at a time, so what it did
and did not do is read from its results, not from a sleep. Every process started here runs in its
own session and is killed by process group on teardown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import signal
import socket
import stat
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

from swarmgate.models.settings.config import Extension
from swarmgate.operator.delivery.proxystate import ProxyRecord, ProxyState
from swarmgate.operator.delivery.pusher import Pusher
from swarmgate.operator.delivery.token import new_token, token_digest
from swarmgate.operator.delivery.wire import ProxyTarget
from swarmgate.renderers.nginx import control_server

BUSYBOX = Path("/bin/busybox")
NGINX = Path("/usr/sbin/nginx")
AGENT = Path(str(resources.files("swarmgate.operator.delivery").joinpath("agent.sh")))


@pytest.fixture(autouse=True, scope="module")
def _stop_signals_not_ignored() -> Iterator[None]:
    """Give the agents QUIT and INT with their default action, as Docker gives a container's process.

    A command started in the background by a non-interactive shell (`make test &` from a script)
    inherits QUIT and INT *ignored*, every process below it too, and a shell cannot trap a signal
    that was ignored when it started: the agent's `trap stop QUIT` would then do nothing, and each
    test that stops an agent with QUIT would wait for it forever. That is how a CI-like run launched
    from a script failed six of these tests; in a proxy container the agent starts with defaults."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGQUIT, signal.SIGINT)}
    for sig, action in saved.items():
        if action == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL if sig == signal.SIGQUIT else signal.default_int_handler)
    try:
        yield
    finally:
        for sig, action in saved.items():
            signal.signal(sig, action)
EXT = "default"

pytestmark = pytest.mark.skipif(not (BUSYBOX.exists() and NGINX.exists()), reason="needs busybox and nginx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class Proxy:
    """One proxy task's container, played on loopback: its agent, nginx, and the pusher aimed at it."""

    tmp: Path
    port: int
    token: str
    nginx_name: str = "nginx"
    task: str = "task1"
    store: ProxyState = field(default_factory=ProxyState)
    agent: subprocess.Popen[bytes] | None = None
    pusher: Pusher = field(init=False)

    def __post_init__(self) -> None:
        self.pusher = Pusher(self.store, lambda: token_digest(self.token), push_timeout=10)
        self.aim(self.task)

    @property
    def dir(self) -> Path:
        return self.tmp / "swarmgate"

    def conf(self, body: str, *, status: int = 200, extra: str = "") -> str:
        temp = " ".join(f"{kind}_temp_path {self.tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
        control = control_server(Extension(TargetPort=self.port), control_dir=str(self.dir)).replace(
            f"listen {self.port};", f"listen 127.0.0.1:{self.port};")
        return (
            f"user root;\npid {self.tmp}/nginx.pid;\nerror_log {self.tmp}/error.log;\nworker_processes 1;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n  {temp}\n  {extra}\n"
            f"  server {{ listen 127.0.0.1:{self.port} default_server; "
            f"location / {{ return {status} \"{body}\\n\"; }} }}\n{control}}}\n"
        )

    def start_agent(self, task: str | None = None) -> None:
        self.task = task or self.task
        bin_dir = self.tmp / "bin"
        if not bin_dir.exists():
            bin_dir.mkdir()
            for applet in subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                                         check=True).stdout.split():
                (bin_dir / applet).symlink_to(BUSYBOX)
            (bin_dir / self.nginx_name).symlink_to(NGINX)
        (self.tmp / "token").write_text(self.token)  # a Swarm secret holds exactly the token's bytes
        (self.tmp / "bootstrap.conf").write_text(self.conf("bootstrap", status=503))
        env = {
            "PATH": str(bin_dir),
            "SWARMGATE_TASK_ID": self.task,
            "SWARMGATE_TOKEN_FILE": str(self.tmp / "token"),
            "SWARMGATE_CONFIG_PATH": str(self.tmp / "nginx.conf"),
            "SWARMGATE_BOOTSTRAP_PATH": str(self.tmp / "bootstrap.conf"),
            "SWARMGATE_DIR": str(self.dir),
            "SWARMGATE_STATE_DIR": str(self.tmp / "state"),
            "SWARMGATE_NGINX": self.nginx_name,
        }
        with open(self.tmp / "agent.log", "ab") as log:
            self.agent = subprocess.Popen([str(BUSYBOX), "sh", str(AGENT)], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def stop_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGQUIT)
        assert self.agent.wait(timeout=10) == 0

    def aim(self, task: str) -> None:
        """Tell the pusher which task the Swarm runs at this address (what a snapshot would say)."""
        self.pusher.track({EXT: [ProxyTarget(EXT, task, "node1", "lb-1", "127.0.0.1", self.port)]})

    def push_round(self) -> None:
        """One pusher round, waited for: read every status, push where needed, wait for the outcome."""
        done, _ = concurrent.futures.wait(self.pusher.round(), timeout=30)
        for future in done:
            future.result()

    def publish(self, body: str, **kw: object) -> str:
        text = self.conf(body, **kw)  # type: ignore[arg-type]
        digest = hashlib.sha256(text.encode()).hexdigest()
        self.pusher.publish(EXT, text, digest)
        return digest

    def log(self) -> str:
        return (self.tmp / "agent.log").read_text()

    def get(self, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status, r.read().decode().strip()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode().strip()

    def master_pid(self) -> int:
        return int((self.tmp / "nginx.pid").read_text())

    def record(self) -> ProxyRecord:
        (rec,) = self.store.proxies(EXT)
        return rec


@pytest.fixture(params=["nginx", "ng) x (y"], ids=["nginx", "odd-command-name"])
def proxy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    # A command name with spaces and parentheses must not confuse the agent's /proc/*/stat reading.
    p = Proxy(tmp_path, free_port(), new_token(), nginx_name=request.param)
    p.start_agent()
    try:
        eventually(lambda: p.get() == (503, "bootstrap"), "the bootstrap config to serve")
        yield p
    finally:
        p.pusher.stop()
        if p.agent is not None:
            # The agent's own session: agent, nginx and its workers, even if the agent is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.agent.pid, signal.SIGKILL)
            p.agent.wait()


def test_a_new_proxy_serves_the_bootstrap_and_says_so_under_its_own_task_id(proxy: Proxy) -> None:
    proxy.push_round()
    rec = proxy.record()
    assert (rec.task, rec.node, rec.hostname, rec.served_digest, rec.last_status) == ("task1", "node1", "lb-1", "",
                                                                                       "ok")


def test_pushed_configs_are_reloaded_in_place_and_recorded(proxy: Proxy) -> None:
    master = proxy.master_pid()
    for n in range(3):
        digest = proxy.publish(f"v{n}")
        proxy.push_round()
        assert proxy.record().served_digest == digest and proxy.store.all_current(EXT)
        assert proxy.get() == (200, f"v{n}")
    assert proxy.master_pid() == master  # hitless: reloads, never a new master
    assert proxy.log().count("serving ") == 3


def test_a_restarted_operator_finds_the_proxy_current_and_pushes_nothing(proxy: Proxy) -> None:
    text_digest = proxy.publish("routes")
    proxy.push_round()
    proxy.pusher.stop()
    # A new operator process: empty store, new pusher, the same deterministic config.
    proxy.store = ProxyState()
    proxy.pusher = Pusher(proxy.store, lambda: token_digest(proxy.token), push_timeout=10)
    proxy.aim(proxy.task)
    assert proxy.publish("routes") == text_digest
    proxy.push_round()
    assert proxy.record().served_digest == text_digest and proxy.store.all_current(EXT)
    assert proxy.log().count("serving ") == 1  # the first operator's push only


def test_invalid_config_is_never_loaded_reported_and_not_pushed_again(proxy: Proxy) -> None:
    good = proxy.publish("good")
    proxy.push_round()
    bad = proxy.publish("bad", extra="no_such_directive on;")
    proxy.push_round()
    rec = proxy.record()
    assert (rec.served_digest, rec.rejected_digest, rec.last_status) == (good, bad, "error")
    assert 'unknown directive "no_such_directive"' in rec.last_error
    assert proxy.get() == (200, "good")
    assert (proxy.tmp / "nginx.conf").read_text() == proxy.conf("good")
    proxy.push_round()
    proxy.push_round()
    assert proxy.log().count("rejected") == 1  # the rejected digest is not pushed again
    fixed = proxy.publish("fixed")
    proxy.push_round()
    assert proxy.record().served_digest == fixed and proxy.get() == (200, "fixed")


def test_a_replaced_task_starts_from_what_its_node_served_and_needs_no_push(proxy: Proxy) -> None:
    digest = proxy.publish("routes")
    proxy.push_round()
    proxy.stop_agent()
    # The operator is away: nothing pushes. The next task on this node mounts the same volume.
    proxy.start_agent(task="task2")
    eventually(lambda: proxy.get() == (200, "routes"), "the saved config to serve")
    status = proxy.get("/swarmgate/v2/status", {"Host": "swarmgate-control.invalid",
                                                "Authorization": f"Bearer {token_digest(proxy.token)}"})
    assert status == (200, f"swarmgate/2 task2 ok {digest}")
    proxy.aim("task2")
    proxy.store.retain_tasks({EXT: ["task2"]})
    proxy.push_round()
    assert proxy.record().task == "task2" and proxy.store.all_current(EXT)
    assert proxy.log().count("serving ") == 1  # only the first task's reload: nothing was pushed again


def test_a_saved_config_that_no_longer_passes_nginx_t_gives_way_to_the_bootstrap(proxy: Proxy) -> None:
    proxy.publish("needs-a-file", extra=f"include {proxy.tmp}/extra.conf;")
    (proxy.tmp / "extra.conf").write_text("")
    proxy.push_round()
    assert proxy.get() == (200, "needs-a-file")
    proxy.stop_agent()
    (proxy.tmp / "extra.conf").unlink()  # as a TLS secret the new task no longer mounts
    proxy.start_agent(task="task2")
    eventually(lambda: proxy.get() == (503, "bootstrap"), "the bootstrap")


def test_a_status_naming_another_task_is_ignored(proxy: Proxy) -> None:
    proxy.aim("phantom")
    proxy.publish("x")
    proxy.push_round()
    assert proxy.store.proxies() == []
    assert proxy.get() == (503, "bootstrap")  # nothing is pushed to a task that is not the one listed


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "token"], ids=["none", "wrong", "the-token"])
def test_the_control_server_refuses_requests_without_the_digest(proxy: Proxy, authorization: str | None) -> None:
    headers = {"Host": "swarmgate-control.invalid"}
    if authorization is not None:
        headers["Authorization"] = authorization.replace("token", f"Bearer {proxy.token}")
    assert proxy.get("/swarmgate/v2/status", headers)[0] == 401
    assert proxy.get("/anything", headers)[0] == 404
    assert proxy.get("/swarmgate/v2/status")[0] == 503  # any other host: the default server


def test_a_wrong_token_digest_pushes_nothing(proxy: Proxy) -> None:
    proxy.token = new_token()  # the operator holds another token's digest
    proxy.publish("x")
    proxy.push_round()
    assert proxy.store.proxies() == [] and proxy.get() == (503, "bootstrap")


def test_the_token_is_in_no_argv_and_its_digest_readable_by_root_only(proxy: Proxy) -> None:
    proxy.publish("x")
    proxy.push_round()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            assert proxy.token.encode() not in cmdline.read_bytes()
    assert proxy.token not in proxy.log()
    auth = proxy.dir / "auth" / "token.conf"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600 and auth.stat().st_uid == 0
    assert stat.S_IMODE(auth.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((proxy.dir / "inbox").stat().st_mode) == 0o1733


def test_sigquit_stops_nginx_gracefully_and_the_agent_exits(proxy: Proxy) -> None:
    master = proxy.master_pid()
    proxy.stop_agent()
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    assert "stopped" in proxy.log()


def test_a_stop_right_after_start_waits_for_nginx_to_be_ready(tmp_path: Path) -> None:
    p = Proxy(tmp_path, free_port(), new_token())
    p.start_agent()
    assert p.agent is not None
    try:
        deadline = time.monotonic() + 10
        while "nginx started" not in p.log() and time.monotonic() < deadline:  # the trap is set by then
            time.sleep(0.002)
        p.agent.send_signal(signal.SIGTERM)  # before nginx has workers, most likely
        assert p.agent.wait(timeout=10) == 0
        assert "stopped" in p.log() and "exited unexpectedly" not in p.log()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.agent.pid, signal.SIGKILL)


def test_agent_exits_non_zero_when_nginx_dies(proxy: Proxy) -> None:
    assert proxy.agent is not None
    os.kill(proxy.master_pid(), signal.SIGKILL)
    assert proxy.agent.wait(timeout=5) != 0
    assert "nginx exited unexpectedly" in proxy.log()


def test_no_request_is_dropped_across_ten_reloads(proxy: Proxy) -> None:
    proxy.publish("r0")
    proxy.push_round()
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
            proxy.publish(f"r{n}")
            proxy.push_round()
    finally:
        done.set()
        client.join()
    print(f"requests during 10 reloads: {outcomes}")
    assert set(outcomes) == {"200"} and outcomes["200"] > 100

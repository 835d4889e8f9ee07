"""End to end on loopback: the real agent.sh under busybox sh, real nginx, the real pusher.

The PATH holds only busybox applets and nginx, as in a stock nginx image. The nginx configs are the
tests' own small ones plus swarmgate's real control server (rendered by `control_server`, pointed at
this test's directory and at a TLS listener on 127.0.0.1). nginx's workers run as an unprivileged
user, as the content policy demands, so each test's directory is world-traversable. The pusher is
driven one round at a time, so what it did and did not do is read from its results, not from a
sleep; tests that forge, replay or aim pushes themselves talk TLS to the control server directly
(`Proxy.control`) and wait for the agent's log line about that push. Every process started here runs
in its own session and is killed by process group on teardown.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import grp
import hashlib
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.proxystate import ProxyRecord, ProxyState
from swarmgate.operator.delivery.pusher import Pusher
from swarmgate.operator.delivery.wire import AgentStatus, ForgedStatus, ProxyTarget
from swarmgate.operator.planning.runtime import AGENT_SCRIPT
from swarmgate.renderers.nginx import CONTROL_HOST, control_server, render_nginx
from tests.factories import node, service, task
from tests.support import free_port, wait_for

BUSYBOX = Path("/bin/busybox")
NGINX = Path("/usr/sbin/nginx")
# What `Proxy.control` returns when the server closed the connection without an answer (nginx's 444).
NO_ANSWER = 0
EXT = "default"
MIN_BODY_LIMIT = 32 * 1024 * 1024
# One line per push the agent handled: refused (no state change), rejected (error status), applied.
OUTCOME = re.compile(r"^swarmgate-agent: (refused a push|rejected|serving|already serving)[ :]", re.MULTILINE)

pytestmark = pytest.mark.skipif(not (BUSYBOX.exists() and NGINX.exists()) or os.geteuid() != 0,
                                reason="needs busybox, nginx and root (the agent is PID 1 of a container)")


def _worker_user() -> str:
    """`user` for the tests' configs: nobody and its own group (Debian names that group nogroup)."""
    nobody = pwd.getpwnam("nobody")
    return f"nobody {grp.getgrgid(nobody.pw_gid).gr_name}"


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


def foreign_context(key: ChannelKey | None) -> ssl.SSLContext:
    """A TLS client that trusts any server and presents `key`'s certificate, or none at all: what
    someone without the channel key can do at best. Only the server's own checks stand in its way."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if key is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as pem:
            pem.write(key.cert_pem + key.key_pem)
            pem.flush()
            context.load_cert_chain(pem.name)
    return context


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Proxy:
    """One proxy task's container, played on loopback: its agent, nginx, and the pusher aimed at it."""

    tmp: Path
    port: int  # HTTP: the routes (here one `return`)
    ssl_port: int  # TLS: the control server (and the routes' TLS in a real config)
    key: ChannelKey | None = field(default_factory=ChannelKey.generate)
    nginx_name: str = "nginx"
    task: str = "task1"
    term: int | None = 1  # the pusher's leader term
    store: ProxyState = field(default_factory=ProxyState)
    agent: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # more of the agent's environment
    pusher: Pusher = field(init=False)

    def __post_init__(self) -> None:
        self.new_pusher()

    def new_pusher(self) -> None:
        """A new operator process: empty store, new pusher (the same key and term)."""
        self.store = ProxyState()
        self.pusher = Pusher(self.store, lambda: self.key, term=lambda: self.term, push_timeout=10)
        self.aim(self.task)

    @property
    def dir(self) -> Path:
        return self.tmp / "swarmgate"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def conf(self, body: str, *, status: int = 200, extra: str = "", main: str = "",
             user: str | None = None, control: str | None = None) -> str:
        temp = " ".join(f"{kind}_temp_path {self.tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
        if control is None:
            control = control_server(Extension.model_validate({"TargetPort": self.port}), control_dir=str(self.dir),
                                     listen=f"127.0.0.1:{self.ssl_port} ssl")
        return (
            f"{'' if user == '' else f'user {user or _worker_user()};'}\n"  # "": no user directive at all
            f"pid {self.tmp}/nginx.pid;\nerror_log {self.tmp}/error.log;\n"
            f"worker_processes 1;\n{main}\nevents {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n  {temp}\n  {extra}\n"
            f"  server {{ listen 127.0.0.1:{self.port} default_server; "
            f"location / {{ return {status} \"{body}\\n\"; }} }}\n"
            # As in a rendered config: TLS without the control server's name gets no handshake.
            f"  server {{ listen 127.0.0.1:{self.ssl_port} ssl default_server; ssl_reject_handshake on; }}\n"
            f"{control}}}\n"
        )

    def start_agent(self, task: str | None = None, *, key_text: str | None = None) -> None:
        self.task = task or self.task
        bin_dir = self.tmp / "bin"
        if not bin_dir.exists():
            bin_dir.mkdir()
            for applet in subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                                         check=True).stdout.split():
                (bin_dir / applet).symlink_to(BUSYBOX)
            (bin_dir / self.nginx_name).symlink_to(NGINX)
        key_file = self.tmp / "swarmgate-channel"
        key_file.unlink(missing_ok=True)
        if key_text is not None or self.key is not None:
            key_file.write_text(key_text if key_text is not None else self.key.file_text())  # type: ignore[union-attr]
            key_file.chmod(0o400)  # as Swarm mounts a secret
        (self.tmp / "bootstrap.conf").write_text(self.conf("bootstrap", status=503))
        env = {
            "PATH": str(bin_dir),
            "SWARMGATE_TASK_ID": self.task,
            "SWARMGATE_KEY_FILE": str(key_file),
            "SWARMGATE_CONFIG_PATH": str(self.tmp / "nginx.conf"),
            "SWARMGATE_BOOTSTRAP_PATH": str(self.tmp / "bootstrap.conf"),
            "SWARMGATE_DIR": str(self.dir),
            "SWARMGATE_STATE_DIR": str(self.state),
            "SWARMGATE_NGINX": self.nginx_name,
            **self.env,
        }
        with open(self.tmp / "agent.log", "ab") as log:
            self.agent = subprocess.Popen([str(BUSYBOX), "sh", str(AGENT_SCRIPT)], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def stop_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGQUIT)
        assert self.agent.wait(timeout=10) == 0

    def aim(self, task: str) -> None:
        """Tell the pusher which task the Swarm runs at this address (what a snapshot would say)."""
        self.pusher.track({EXT: [ProxyTarget(EXT, task, "node1", "lb-1", "127.0.0.1", self.ssl_port)]})

    def push_round(self) -> None:
        """One pusher round, waited for: read every status, push where needed, wait for the outcome."""
        done, _ = concurrent.futures.wait(self.pusher.round(), timeout=30)
        for future in done:
            future.result()

    def publish(self, body: str, **kw: object) -> str:
        text = self.conf(body, **kw)  # type: ignore[arg-type]
        digest = digest_of(text)
        self.pusher.publish(EXT, text, digest)
        return digest

    def log(self) -> str:
        return (self.tmp / "agent.log").read_text()

    def outcomes(self) -> list[str]:
        return OUTCOME.findall(self.log())

    def get(self, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.status, r.read().decode().strip()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode().strip()

    def control(self, method: str, path: str, body: bytes | None = None, *,
                context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One request to the control server over TLS, SNI and Host swarmgate-control.invalid; by
        default as the operator makes it (the channel certificate pinned and presented)."""
        assert context is not None or self.key is not None
        context = context or self.key.client_context()  # type: ignore[union-attr]
        raw = socket.create_connection(("127.0.0.1", self.ssl_port), timeout=5)
        conn = http.client.HTTPConnection(CONTROL_HOST, self.ssl_port, timeout=5)
        try:
            conn.sock = context.wrap_socket(raw, server_hostname=CONTROL_HOST)
            if headers is None:
                conn.request(method, path, body=body)
            else:  # Host and these headers, and only the body given (a Content-Length may announce more)
                conn.putrequest(method, path)
                for name, value in headers.items():
                    conn.putheader(name, value)
                conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read()
        except http.client.RemoteDisconnected:
            return NO_ANSWER, b""
        finally:
            conn.close()
            raw.close()

    def raw_status(self) -> bytes:
        code, body = self.control("GET", wire.STATUS_PATH)
        assert code == 200, body
        return body

    def status(self) -> AgentStatus:
        assert self.key is not None
        return wire.verify_status(self.raw_status(), self.key)

    def put(self, body: bytes) -> None:
        """PUT a push body as it is and wait until the agent has handled it (its log says how)."""
        before = len(self.outcomes())
        code, answer = self.control("PUT", wire.CONFIG_PATH, body)
        assert code in (201, 204), (code, answer)
        wait_for(lambda: len(self.outcomes()) > before, timeout=15, what="the agent to handle the push")

    def signed(self, text: str, *, term: int, seq: int, task: str | None = None,
               key: ChannelKey | None = None) -> bytes:
        return wire.push_body(key or self.key, task=task or self.task, term=term, seq=seq,  # type: ignore[arg-type]
                              digest=digest_of(text), text=text)

    def push(self, body: str, *, term: int, seq: int, task: str | None = None, **kw: object) -> bytes:
        """Push `conf(body, **kw)` signed with (term, seq) directly; returns the bytes sent."""
        data = self.signed(self.conf(body, **kw), term=term, seq=seq, task=task)  # type: ignore[arg-type]
        self.put(data)
        return data

    def master_pid(self) -> int:
        return int((self.tmp / "nginx.pid").read_text())

    def record(self) -> ProxyRecord:
        (rec,) = self.store.proxies(EXT)
        return rec

    def kill(self) -> None:
        self.pusher.stop()
        if self.agent is not None:
            # The agent's own session: agent, nginx and its workers, even if the agent is gone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.agent.pid, signal.SIGKILL)
            self.agent.wait()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private directory that nginx's unprivileged workers can traverse (pytest's tmp_path sits
    under a 0700 directory): they read the status file and write pushes below it."""
    path = Path(tempfile.mkdtemp(prefix="swarmgate-agent-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start(proxy: Proxy, ready: tuple[int, str] = (503, "bootstrap")) -> Proxy:
    proxy.start_agent()
    wait_for(lambda: proxy.get() == ready, timeout=10, what=f"{ready} to serve")
    return proxy


@pytest.fixture(params=["nginx", "ng) x (y"], ids=["nginx", "odd-command-name"])
def proxy(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    # A command name with spaces and parentheses must not confuse the agent's /proc/*/stat reading.
    p = Proxy(workdir, free_port(), free_port(), nginx_name=request.param)
    try:
        yield start(p)
    finally:
        p.kill()


@pytest.fixture
def plain(workdir: Path) -> Iterator[Proxy]:
    """One proxy, for the tests that need no second command name."""
    p = Proxy(workdir, free_port(), free_port())
    try:
        yield start(p)
    finally:
        p.kill()


# -- as swarmgate/2 did, through the real pusher ------------------------------------------------


def test_a_new_proxy_serves_the_bootstrap_and_says_so_under_its_own_task_id(proxy: Proxy) -> None:
    proxy.push_round()
    rec = proxy.record()
    assert (rec.task, rec.node, rec.hostname, rec.served_digest, rec.last_status) == ("task1", "node1", "lb-1", "",
                                                                                       "ok")
    assert proxy.status() == AgentStatus(task="task1", serving="", term=0, seq=0)


def test_pushed_configs_are_reloaded_in_place_and_recorded(proxy: Proxy) -> None:
    master = proxy.master_pid()
    for n in range(3):
        digest = proxy.publish(f"v{n}")
        proxy.push_round()
        assert proxy.record().served_digest == digest and proxy.store.all_current(EXT)
        assert proxy.get() == (200, f"v{n}")
    assert proxy.master_pid() == master  # hitless: reloads, never a new master
    assert proxy.outcomes() == ["serving"] * 3
    status = proxy.status()
    assert status.term == 1 and status.seq > 0  # the fence: the pusher's term and its last sequence number


def test_a_restarted_operator_finds_the_proxy_current_and_pushes_nothing(proxy: Proxy) -> None:
    text_digest = proxy.publish("routes")
    proxy.push_round()
    proxy.pusher.stop()
    proxy.new_pusher()  # the same deterministic config
    assert proxy.publish("routes") == text_digest
    proxy.push_round()
    assert proxy.record().served_digest == text_digest and proxy.store.all_current(EXT)
    assert proxy.outcomes() == ["serving"]  # the first operator's push only


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
    assert proxy.outcomes().count("rejected") == 1  # the rejected digest is not pushed again
    fixed = proxy.publish("fixed")
    proxy.push_round()
    assert proxy.record().served_digest == fixed and proxy.get() == (200, "fixed")


def test_a_replaced_task_starts_from_what_its_node_served_and_needs_no_push(proxy: Proxy) -> None:
    digest = proxy.publish("routes")
    proxy.push_round()
    fence = proxy.status()
    proxy.stop_agent()
    # The operator is away: nothing pushes. The next task on this node mounts the same volume.
    proxy.start_agent(task="task2")
    wait_for(lambda: proxy.get() == (200, "routes"), timeout=10, what="the saved config to serve")
    # The saved config named task1: it is the node's, verified by its MAC, and so is the fence.
    assert proxy.status() == AgentStatus(task="task2", serving=digest, term=fence.term, seq=fence.seq)
    proxy.aim("task2")
    proxy.store.retain_tasks({EXT: ["task2"]})
    proxy.push_round()
    assert proxy.record().task == "task2" and proxy.store.all_current(EXT)
    assert proxy.outcomes() == ["serving"]  # only the first task's reload: nothing was pushed again


def test_a_saved_config_that_no_longer_passes_nginx_t_gives_way_to_the_bootstrap(proxy: Proxy) -> None:
    # A log in a directory (the policy admits no `include` of a test file): nginx -t opens it.
    proxy.publish("needs-a-file", extra=f"access_log {proxy.tmp}/logs/access.log;")
    (proxy.tmp / "logs").mkdir()
    proxy.push_round()
    assert proxy.get() == (200, "needs-a-file")
    proxy.stop_agent()
    shutil.rmtree(proxy.tmp / "logs")  # as a TLS secret the new task no longer mounts
    proxy.start_agent(task="task2")
    wait_for(lambda: proxy.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")


def test_a_status_naming_another_task_is_ignored(proxy: Proxy) -> None:
    proxy.aim("phantom")
    proxy.publish("x")
    proxy.push_round()
    assert proxy.store.proxies() == []
    assert proxy.get() == (503, "bootstrap")  # nothing is pushed to a task that is not the one listed
    assert proxy.outcomes() == []


def test_sigquit_stops_nginx_gracefully_and_the_agent_exits(proxy: Proxy) -> None:
    master = proxy.master_pid()
    proxy.stop_agent()
    with pytest.raises(ProcessLookupError):
        os.kill(master, 0)
    assert "stopped" in proxy.log()


def test_a_stop_right_after_start_waits_for_nginx_to_be_ready(workdir: Path) -> None:
    p = Proxy(workdir, free_port(), free_port())
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
        p.kill()


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


# -- swarmgate/3: what a push must prove --------------------------------------------------------


def test_a_push_with_a_bad_mac_is_refused(plain: Proxy) -> None:
    plain.push("good", term=1, seq=1)
    status = plain.raw_status()
    text = plain.conf("evil")
    forged = plain.signed(text, term=1, seq=2, key=ChannelKey.generate())  # signed with another key
    header, _, rest = plain.signed(text, term=1, seq=3).partition(b"\n")
    altered = header.replace(b" 1 3 ", b" 2 3 ") + b"\n" + rest  # a field changed after signing
    unsigned = f"swarmgate/3 config task1 1 4 {digest_of(text)}\n{text}".encode()  # no MAC at all
    for body in (forged, altered, unsigned, b"", b"swarmgate/3 config\n", text.encode()):
        plain.put(body)
    assert plain.outcomes() == ["serving"] + ["refused a push"] * 6
    assert plain.get() == (200, "good") and plain.raw_status() == status  # nothing changed, not the fence either
    assert "not a swarmgate/3 config header with the channel key's MAC" in plain.log()


def test_a_push_whose_text_is_not_its_digest_is_refused_and_does_not_move_the_fence(plain: Proxy) -> None:
    plain.push("good", term=1, seq=1)
    status = plain.raw_status()
    header, _, _ = plain.signed(plain.conf("evil"), term=1, seq=2).partition(b"\n")
    plain.put(header + b"\n" + plain.conf("other").encode())  # an authentic header, another text
    assert plain.outcomes()[-1] == "refused a push" and "not the header's digest" in plain.log()
    assert plain.get() == (200, "good") and plain.raw_status() == status
    plain.push("next", term=1, seq=2)  # the same (term, seq), now with its own text: still new
    assert plain.get() == (200, "next")


def test_a_push_aimed_at_another_task_is_refused(plain: Proxy) -> None:
    status = plain.raw_status()
    plain.push("elsewhere", term=1, seq=1, task="task9")
    assert plain.outcomes() == ["refused a push"] and "aimed at task task9" in plain.log()
    assert plain.get() == (503, "bootstrap") and plain.raw_status() == status


def test_a_replayed_push_is_refused(plain: Proxy) -> None:
    first = plain.push("first", term=1, seq=1)
    second = plain.push("second", term=1, seq=2)
    status = plain.raw_status()
    plain.put(first)  # a captured older push
    plain.put(second)  # the newest push, again
    assert plain.outcomes() == ["serving", "serving", "refused a push", "refused a push"]
    assert plain.get() == (200, "second") and plain.raw_status() == status
    assert "term 1 seq 1 is not newer than the fence (term 1 seq 2)" in plain.log()


def test_an_older_term_is_refused_and_the_status_shows_the_newer_one_to_the_deposed_leader(plain: Proxy) -> None:
    old_leader = plain.push("old", term=4, seq=100)
    new = plain.push("new-leader", term=5, seq=1)
    plain.push("deposed", term=4, seq=10**17)  # a far greater sequence number does not outrank a term
    plain.put(old_leader)
    assert plain.outcomes()[-2:] == ["refused a push", "refused a push"]
    status = plain.status()
    assert (status.serving, status.term, status.seq) == (digest_of(plain.conf("new-leader")), 5, 1)
    assert plain.get() == (200, "new-leader")
    # The deposed leader's pusher reads that status, sees term 5 > its 4 and stands down: no push.
    plain.term = 4
    plain.publish("deposed-again")
    plain.push_round()
    plain.push_round()
    assert plain.record().served_digest == digest_of(plain.conf("new-leader"))
    assert len(plain.outcomes()) == 4 and plain.get() == (200, "new-leader")
    assert new  # the newest push stays the one served


def test_the_fence_survives_an_agent_restart(plain: Proxy) -> None:
    first = plain.push("first", term=2, seq=1)
    second = plain.push("second", term=2, seq=2)
    plain.stop_agent()
    plain.start_agent()  # the same task (as a restart of the agent alone), the same state volume
    wait_for(lambda: plain.get() == (200, "second"), timeout=10, what="the saved config")
    assert (plain.status().term, plain.status().seq) == (2, 2)
    plain.put(first)
    plain.put(second)
    assert plain.outcomes()[-2:] == ["refused a push", "refused a push"] and plain.get() == (200, "second")
    # The fence file is gone (a crash while writing it, say): the saved config's header is a fence too.
    plain.stop_agent()
    (plain.state / "fence").unlink()
    plain.start_agent()
    wait_for(lambda: plain.get() == (200, "second"), timeout=10, what="the saved config")
    plain.put(first)
    assert plain.outcomes()[-1] == "refused a push" and plain.get() == (200, "second")


def test_an_authentic_push_whose_config_is_rejected_still_moves_the_fence(plain: Proxy) -> None:
    bad = plain.push("bad", term=1, seq=5, extra="no_such_directive on;")
    status = plain.status()
    assert (status.rejected, status.term, status.seq) == (digest_of(plain.conf("bad", extra="no_such_directive on;")),
                                                           1, 5)
    plain.stop_agent()
    plain.start_agent()
    wait_for(lambda: plain.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")
    assert (plain.status().term, plain.status().seq) == (1, 5)
    plain.put(bad)
    assert plain.outcomes()[-1] == "refused a push"


@pytest.mark.parametrize("tamper", ["text", "text-and-digest", "another-key"])
def test_a_tampered_saved_config_is_never_served(plain: Proxy, tamper: str) -> None:
    plain.push("routes", term=1, seq=1)
    plain.stop_agent()
    saved = plain.state / "config"
    header, _, text = saved.read_text().partition("\n")
    evil = text.replace('"routes', '"evil')
    if tamper == "text":
        saved.write_text(f"{header}\n{evil}")
    elif tamper == "text-and-digest":
        saved.write_text(f"{header.replace(digest_of(text), digest_of(evil))}\n{evil}")
    else:
        saved.write_bytes(plain.signed(evil, term=1, seq=9, key=ChannelKey.generate()))
    plain.start_agent()
    wait_for(lambda: plain.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")
    assert "the saved config is not signed with the channel key, or its digest is wrong: never served" in plain.log()
    assert plain.status().serving == ""


def test_a_saved_config_signed_with_a_replaced_key_is_not_served(plain: Proxy) -> None:
    plain.push("routes", term=1, seq=1)
    plain.stop_agent()
    plain.key = ChannelKey.generate()  # the operator rotated the channel key
    plain.start_agent()
    wait_for(lambda: plain.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")
    assert (plain.status().serving, plain.status().term, plain.status().seq) == ("", 0, 0)
    assert "the saved fence is not signed with the channel key: ignored" in plain.log()


# -- the content policy --------------------------------------------------------------------------


POLICY_BREAKS: dict[str, tuple[dict[str, Any], str]] = {
    "user-root": ({"user": "root"}, "must not run as root"),
    "user-quoted-zero": ({"user": '"0" nogroup'}, "must not run as root"),
    "user-root-across-lines": ({"user": "nobody;\nuser\n  # why not\n  root"}, "must not run as root"),
    "master-process": ({"main": "master_process off;"}, "must not set master_process"),
    "no-control-include": ({"control": "  server { listen 127.0.0.1:1 ssl; server_name swarmgate-control.invalid; "
                                       "ssl_reject_handshake on; }\n"},
                           "exactly once (0 found)"),
    "second-control-name": ({"extra": "server { listen 127.0.0.1:2; server_name swarmgate-control.example; }"},
                            "'swarmgate-control' must occur once"),
    "agent-dir": ({"extra": "server { listen 127.0.0.1:3; location / { alias DIR/key/; } }"},
                  "must occur once, in the control server's include (2 found)"),
    "channel-secret": ({"extra": "server { listen 127.0.0.1:4; location / { alias /run/secrets/swarmgate-channel; } }"},
                       "must not name the swarmgate-channel secret"),
    # init_by_lua runs in nginx's master, as root: only swarmgate's balancer, byte for byte.
    "lua-elsewhere": ({"extra": "init_by_lua_block { os.execute('id') }"}, "Lua is admitted only as swarmgate's"),
    "lua-in-the-section": ({"extra": "\n    # swarmgate lua: begin\n    init_by_lua_block { os.execute('id') }\n"
                                     "    # swarmgate lua: end"}, "is not swarmgate's balancer"),
    "lua-section-unended": ({"extra": "\n    # swarmgate lua: begin\n    init_by_lua_block { }"},
                            "is not swarmgate's balancer"),
    "lua-quoted-directive": ({"extra": "server { listen 127.0.0.1:5; location / { 'content_by_lua_block' { } } }"},
                             "Lua is admitted only as swarmgate's"),
}


@pytest.mark.parametrize("case", list(POLICY_BREAKS))
def test_a_config_against_the_content_policy_is_rejected_and_the_old_one_serves(plain: Proxy, case: str) -> None:
    kw, why = POLICY_BREAKS[case]
    kw = {name: value.replace("DIR", str(plain.dir)) for name, value in kw.items()}
    plain.push("good", term=1, seq=1)
    plain.push("bad", term=1, seq=2, **kw)
    status = plain.status()
    assert (status.serving, status.rejected) == (digest_of(plain.conf("good")), digest_of(plain.conf("bad", **kw)))
    assert status.message.startswith("content policy: ") and why in status.message
    assert (status.term, status.seq) == (1, 2)
    assert plain.get() == (200, "good") and (plain.tmp / "nginx.conf").read_text() == plain.conf("good")


def test_swarmgates_lua_balancer_is_admitted_and_loads(plain: Proxy) -> None:
    lua = Extension.model_validate({"Config": {"LuaBalancer": True}})
    demo = service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    observed = ObservedState.from_api(services=[demo], tasks=[task(demo, "n0", ports={8080: 30000})],
                                      nodes=[node("n0", "127.0.0.1")])
    rendered = render_nginx(lua, build_route_table(observed, lua), server_info="swarmgate/0.1.0 linux/amd64").text
    begin, end = rendered.index("    # swarmgate lua: begin"), rendered.index("    }\n    # Each pool's running tasks")
    modules = "\n".join(f"load_module /usr/lib/nginx/modules/{m}.so;"
                         for m in ("ndk_http_module", "ngx_http_lua_module"))
    plain.push("good", term=1, seq=1)
    plain.push("balanced", term=1, seq=2, main=modules, extra="\n" + rendered[begin:end + 6])
    status = plain.status()
    assert status.rejected == "", status.message
    assert plain.get() == (200, "balanced")


def test_workers_that_run_as_root_after_a_reload_are_rolled_back(plain: Proxy) -> None:
    plain.push("good", term=1, seq=1)
    # A quoted directive name slips past the policy's look for `user root`: only the running workers
    # reveal it (an `include` could bring it too, but the policy admits none of a test's files).
    sneaky = plain.conf("root", user="", main='"user" root;')
    plain.put(plain.signed(sneaky, term=1, seq=2))
    status = plain.status()
    assert status.rejected == digest_of(sneaky)
    assert "a worker ran as root (uid 0) after the reload" in status.message
    assert plain.get() == (200, "good")

    def workers_unprivileged() -> bool:
        master = plain.master_pid()
        uids = []
        for stat_file in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == master:
                    uids.append(stat_file.with_name("status").read_text().split("Uid:")[1].split()[1])
        return bool(uids) and "0" not in uids

    wait_for(workers_unprivileged, timeout=10, what="the old workers to finish")


# -- the channel: who can talk to the control server --------------------------------------------


@pytest.mark.parametrize("client", ["no-certificate", "another-key"])
def test_a_client_without_the_channel_certificate_gets_no_status_and_pushes_nothing(plain: Proxy,
                                                                                     client: str) -> None:
    context = foreign_context(None if client == "no-certificate" else ChannelKey.generate())
    status = plain.raw_status()
    code, body = plain.control("GET", wire.STATUS_PATH, context=context)
    assert (code, body) == (NO_ANSWER, b"")  # the connection closed: no status, not even an error page
    code, _ = plain.control("PUT", wire.CONFIG_PATH, plain.signed(plain.conf("x"), term=9, seq=9), context=context)
    assert code == NO_ANSWER
    time.sleep(0.5)  # the agent polls its inbox every 0.2 s: nothing may come
    assert plain.outcomes() == [] and plain.get() == (503, "bootstrap") and plain.raw_status() == status
    # The operator's side: a server without the channel certificate is not believed either.
    other = ChannelKey.generate()
    with pytest.raises(ssl.SSLCertVerificationError):
        plain.control("GET", wire.STATUS_PATH, context=other.client_context())


def test_plain_http_reaches_no_control_server(plain: Proxy) -> None:
    host = {"Host": CONTROL_HOST}
    assert plain.get(wire.STATUS_PATH, host) == (503, "bootstrap")  # the HTTP listener's default server
    req = urllib.request.Request(f"http://127.0.0.1:{plain.port}{wire.CONFIG_PATH}", method="PUT", headers=host,
                                 data=plain.signed(plain.conf("x"), term=1, seq=1))
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=2)
    assert err.value.code == 503
    # And plain HTTP to the TLS listener is not a way in either.
    with socket.create_connection(("127.0.0.1", plain.ssl_port), timeout=2) as s:
        s.sendall(f"GET {wire.STATUS_PATH} HTTP/1.0\r\nHost: {CONTROL_HOST}\r\n\r\n".encode())
        answer = s.recv(65536)
    assert b"swarmgate/3" not in answer
    time.sleep(0.5)
    assert plain.outcomes() == [] and not (plain.dir / "inbox" / "config").exists()


def test_the_status_mac_verifies_with_the_channel_key_only(plain: Proxy) -> None:
    plain.push("bad", term=3, seq=7, extra="no_such_directive on;")  # an error status: a message too
    raw = plain.raw_status()
    bad = digest_of(plain.conf("bad", extra="no_such_directive on;"))
    assert raw.splitlines()[0] == f"swarmgate/3 status task1 error {bad} - 3 7".encode()
    assert re.fullmatch(rb"(?s).*\nswarmgate/3 mac [0-9a-f]{64}\n", raw)
    assert wire.verify_status(raw, plain.key).message  # type: ignore[arg-type]
    with pytest.raises(ForgedStatus):
        wire.verify_status(raw, ChannelKey.generate())
    with pytest.raises(ForgedStatus):
        wire.verify_status(raw.replace(b" 3 7\n", b" 3 8\n"), plain.key)  # type: ignore[arg-type]


def test_a_push_over_the_body_limit_gets_413_and_changes_nothing(plain: Proxy) -> None:
    status = plain.raw_status()
    assert f"client_max_body_size {MIN_BODY_LIMIT};" in (plain.dir / "control" / "server.conf").read_text()
    body = plain.signed(plain.conf("big"), term=1, seq=1)
    # nginx answers from the announced length, before the body: this client sends none of it.
    code, _ = plain.control("PUT", wire.CONFIG_PATH, headers={"Content-Length": str(MIN_BODY_LIMIT + 1)})
    assert code == 413
    # A whole body over the limit, sent as it is (nginx may answer before it has read it all).
    big = body + b"#" * (MIN_BODY_LIMIT + 1 - len(body))
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        code, _ = plain.control("PUT", wire.CONFIG_PATH, big)
        assert code == 413
    time.sleep(0.5)
    assert plain.outcomes() == [] and plain.get() == (503, "bootstrap") and plain.raw_status() == status
    plain.put(body)  # at the limit's side of the line, the same push goes through
    assert plain.get() == (200, "big")


@contextlib.contextmanager
def argv_watch(secrets: list[bytes]) -> Iterator[list[str]]:
    """Every process's argv, read over and over while the block runs: the pids where a secret showed."""
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    argv = cmdline.read_bytes()
                    seen.extend(cmdline.parent.name for s in secrets if s in argv)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def test_the_key_is_in_no_argv_or_log_and_its_copies_are_root_only(proxy: Proxy) -> None:
    assert proxy.key is not None
    secrets = [proxy.key.hmac_key.hex().encode(), proxy.key.key_pem.splitlines()[1].encode()]
    secrets += [bytes(b ^ pad for b in proxy.key.hmac_key.ljust(64, b"\0")).hex().encode() for pad in (0x36, 0x5C)]
    with argv_watch(secrets) as seen:
        for n in range(3):
            proxy.publish(f"x{n}")
            proxy.push_round()
        proxy.push("bad", term=proxy.status().term + 1, seq=1, extra="no_such_directive on;")
        proxy.put(proxy.signed("refused", term=0, seq=0))
    assert proxy.get() == (200, "x2") and seen == []
    log = proxy.log().encode()
    assert not any(s in log for s in secrets)
    for path, mode in [("key", 0o700), ("key/channel.pem", 0o600), ("work", 0o700), ("work/ipad", 0o600),
                       ("work/opad", 0o600), ("inbox", 0o1733), ("control/server.conf", 0o644), ("status", 0o644)]:
        st = (proxy.dir / path).stat()
        assert (path, stat.S_IMODE(st.st_mode), st.st_uid) == (path, mode, 0)
    assert (proxy.dir / "key" / "channel.pem").read_text() == proxy.key.file_text()
    assert len((proxy.dir / "work" / "ipad").read_bytes()) == 64


@pytest.mark.parametrize("key_text", [None, "", "swarmgate/3 channel-key nothex\n", "not a key at all\n"],
                         ids=["missing", "empty", "bad-hmac-key", "garbage"])
def test_without_a_usable_key_the_proxy_serves_and_its_control_server_shakes_no_hands(
        workdir: Path, key_text: str | None) -> None:
    p = Proxy(workdir, free_port(), free_port())
    try:
        start(p)
        p.push("routes", term=1, seq=1)  # a saved config and a fence from a keyed life
        p.stop_agent()
        key, p.key = p.key, None
        p.start_agent(key_text=key_text)
        # The saved config cannot be verified.
        wait_for(lambda: p.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")
        assert "no usable channel key" in p.log() and "nothing can push a config" in p.log()
        assert "ssl_reject_handshake on;" in (p.dir / "control" / "server.conf").read_text()
        assert not (p.dir / "status").exists() and not (p.dir / "key" / "channel.pem").exists()
        with pytest.raises(ssl.SSLError):
            p.control("GET", wire.STATUS_PATH, context=key.client_context())  # type: ignore[union-attr]
    finally:
        p.kill()


def test_a_key_whose_certificate_nginx_cannot_use_still_serves(workdir: Path) -> None:
    p = Proxy(workdir, free_port(), free_port())
    try:
        broken = p.key.file_text().replace(p.key.cert_pem.splitlines()[2], "A" * 64)  # type: ignore[union-attr]
        p.start_agent(key_text=broken)
        wait_for(lambda: p.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")
        assert "the bootstrap fails nginx -t with the channel key" in p.log()
        assert "ssl_reject_handshake on;" in (p.dir / "control" / "server.conf").read_text()
    finally:
        p.kill()

"""Key rotation, end to end on loopback: the real agent.sh under busybox sh, real nginx (the harness of
`test_agent`). The bootstrap key K0 is the mounted secret and never changes for a task; a rekey
(`PUT /swarmgate/v3/key`, `wire.rekey_body`) makes a newer generation the agent's current key: the
control server's certificate, the pushes' and the statuses' HMAC key. The operator learns which
generation a proxy runs from which certificate its TLS handshake accepts.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import stat
import threading
import time

import pytest

from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_holder import Keyring
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.pusher import Pusher
from swarmgate.operator.delivery.wire import ForgedStatus
from tests.support import wait_for
from tests.unit import test_agent as harness
from tests.unit.test_agent import NO_ANSWER, Proxy, argv_watch, digest_of, foreign_context

# The harness's skip mark and fixtures (its autouse one too), as this module's.
pytestmark = harness.pytestmark
_stop_signals_not_ignored = harness._stop_signals_not_ignored
workdir = harness.workdir
plain = harness.plain

# One line per rekey the agent handled.
REKEY = re.compile(r"^swarmgate-agent: (rekeyed to generation \d+|refused a rekey: .*)$", re.MULTILINE)


def rekeys(p: Proxy) -> list[str]:
    return REKEY.findall(p.log())


def send_rekey(p: Proxy, body: bytes, *, via: ChannelKey | None = None) -> str:
    """PUT a rekey (over TLS made with `via`, by default the proxy's current key) and wait until the
    agent has handled it: its log line about it."""
    before = len(rekeys(p))
    code, answer = p.control("PUT", wire.KEY_PATH, body, context=(via or p.key).client_context())  # type: ignore[union-attr]
    assert code in (201, 204), (code, answer)
    wait_for(lambda: len(rekeys(p)) > before, timeout=20, what="the agent to handle the rekey")
    return rekeys(p)[-1]


def rotate(p: Proxy, bootstrap: ChannelKey, generation: int) -> ChannelKey:
    """A rekey to a new key of `generation`, accepted; the proxy's key is the new one from now on."""
    new = ChannelKey.generate()
    outcome = send_rekey(p, wire.rekey_body(p.key, bootstrap, new, task=p.task, generation=generation))  # type: ignore[arg-type]
    assert outcome == f"rekeyed to generation {generation}", p.log()
    p.key = new
    return new


def forged_rekey(current: ChannelKey, bootstrap: ChannelKey, text: str, *, task: str = "task1", generation: int = 1,
                 digest: str | None = None) -> bytes:
    """A rekey body built by hand: any generation, any text, any SUM (`rekey_body` refuses those)."""
    digest = digest or hashlib.sha256(text.encode()).hexdigest()
    origin = bootstrap.mac(f"swarmgate/3 key-origin {generation} {digest}".encode())
    header = f"swarmgate/3 key {task} {generation} {digest} {origin}"
    return f"{header} {current.mac(header.encode())}\n".encode() + text.encode()


def handshake_fails(p: Proxy, key: ChannelKey) -> bool:
    try:
        p.control("GET", wire.STATUS_PATH, context=key.client_context())
    except ssl.SSLCertVerificationError:
        return True
    return False


def restart(p: Proxy, bootstrap: ChannelKey, task: str | None = None) -> None:
    """Stop the agent and start it again with the same bootstrap secret and state volume."""
    p.stop_agent()
    p.start_agent(task, key_text=bootstrap.file_text())


def test_a_rekey_switches_the_certificate_and_the_keys_and_starts_the_fence_over(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    plain.push("old", term=50, seq=7)
    master = plain.master_pid()
    k1 = ChannelKey.generate()
    body = wire.rekey_body(k0, k0, k1, task="task1", generation=1)
    assert send_rekey(plain, body) == "rekeyed to generation 1"
    # The control server presents the new certificate: the old key's pin fails, the new one's holds.
    assert handshake_fails(plain, k0)
    code, _ = plain.control("GET", wire.STATUS_PATH, context=foreign_context(k0))  # old client certificate
    assert code == NO_ANSWER
    plain.key = k1
    status = plain.status()  # signed with the new key
    assert (status.serving, status.rejected, status.term, status.seq) == (digest_of(plain.conf("old")), "", 0, 0)
    with pytest.raises(ForgedStatus):
        wire.verify_status(plain.raw_status(), k0)
    assert plain.get() == (200, "old") and plain.master_pid() == master  # a reload, never a new master
    # Saved, root-only; the fence of the old key is gone.
    assert (plain.state / "key").read_bytes() == body and not (plain.state / "fence").exists()
    assert (plain.dir / "key" / "channel.pem").read_text() == k1.file_text()
    assert not (plain.dir / "status").exists() and (plain.dir / "status-g1").exists()
    for path, mode in [(plain.state / "key", 0o600), (plain.state / "config", 0o600),
                       (plain.dir / "key" / "channel.pem", 0o600), (plain.dir / "work" / "ipad", 0o600),
                       (plain.dir / "work" / "opad", 0o600), (plain.dir / "status-g1", 0o644)]:
        st = path.stat()
        assert (path.name, stat.S_IMODE(st.st_mode), st.st_uid) == (path.name, mode, 0)
    assert sorted(p.name for p in (plain.dir / "work").iterdir() if "key" in p.name or ".new" in p.name) == []
    # A push signed with the old key is refused, whatever its term.
    plain.put(plain.signed(plain.conf("evil"), term=51, seq=1, key=k0))
    assert plain.outcomes()[-1] == "refused a push" and plain.get() == (200, "old")
    # The new key's fence starts at 0 0: term 1 seq 1 applies, after term 50 under the old key.
    plain.push("new", term=1, seq=1)
    assert plain.get() == (200, "new") and (plain.status().term, plain.status().seq) == (1, 1)
    log = plain.log().encode()
    for key in (k0, k1):
        assert key.hmac_key.hex().encode() not in log and key.key_pem.splitlines()[1].encode() not in log


def test_the_new_key_is_in_no_argv_during_a_rekey(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    new = [ChannelKey.generate() for _ in range(2)]
    secrets = [s for k in new for s in (k.hmac_key.hex().encode(), k.key_pem.splitlines()[1].encode())]
    with argv_watch(secrets) as seen:
        assert send_rekey(plain, wire.rekey_body(k0, k0, new[0], task="task1", generation=1)).startswith("rekeyed")
        plain.key = new[0]
        assert send_rekey(plain, wire.rekey_body(new[0], k0, new[1], task="task1", generation=2)).startswith("rekeyed")
    assert seen == []


REFUSALS = {
    "bad-mac": "not a swarmgate/3 key header with the current key's MAC",
    "bad-origin-mac": "its origin MAC does not verify with the bootstrap key",
    "other-task": "aimed at task task9",
    "same-generation": "generation 1 is not newer than the current one (1)",
    "older-generation": "generation 1 is not newer than the current one (2)",
    "generation-0": "generation 0 is not newer than the current one (0)",
    "text-not-its-sum": "the key's sha256 is not the header's",
    "not-a-key-file": "the text is not a channel key file",
    "unusable-certificate": "the new key fails nginx -t",
    "no-header": "not a swarmgate/3 key header with the current key's MAC",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_rekey_changes_nothing(plain: Proxy, case: str) -> None:
    k0 = plain.key
    assert k0 is not None
    plain.push("routes", term=3, seq=4)
    if case in ("same-generation", "older-generation"):
        rotate(plain, k0, 1)
        if case == "older-generation":
            rotate(plain, k0, 2)
        plain.push("routes", term=3, seq=4)  # serving it already: moves the new key's fence
    current = plain.key
    assert current is not None
    new = ChannelKey.generate()
    broken = new.file_text().replace(new.cert_pem.splitlines()[2], "A" * 64)
    body = {
        "bad-mac": lambda: wire.rekey_body(ChannelKey.generate(), k0, new, task="task1", generation=1),
        "bad-origin-mac": lambda: wire.rekey_body(current, ChannelKey.generate(), new, task="task1", generation=1),
        "other-task": lambda: wire.rekey_body(current, k0, new, task="task9", generation=1),
        "same-generation": lambda: wire.rekey_body(current, k0, new, task="task1", generation=1),
        "older-generation": lambda: wire.rekey_body(current, k0, new, task="task1", generation=1),
        "generation-0": lambda: forged_rekey(current, k0, new.file_text(), generation=0),
        "text-not-its-sum": lambda: forged_rekey(current, k0, new.file_text(),
                                                 digest=digest_of(ChannelKey.generate().file_text())),
        "not-a-key-file": lambda: forged_rekey(current, k0, "swarmgate/3 channel-key " + "ab" * 32 + "\n"),
        "unusable-certificate": lambda: forged_rekey(current, k0, broken),
        "no-header": lambda: new.file_text().encode(),
    }[case]()
    raw = plain.raw_status()
    saved = {name: (plain.state / name).read_bytes() for name in ("config", "fence") if (plain.state / name).exists()}
    saved_key = (plain.state / "key").read_bytes() if (plain.state / "key").exists() else None
    outcome = send_rekey(plain, body)
    assert outcome.startswith("refused a rekey: ") and REFUSALS[case] in outcome, outcome
    # Nothing changed: the same certificate, status, files and key; pushes with the current key apply.
    assert plain.raw_status() == raw and handshake_fails(plain, new)
    assert {name: (plain.state / name).read_bytes() for name in saved} == saved
    assert ((plain.state / "key").read_bytes() if (plain.state / "key").exists() else None) == saved_key
    assert (plain.dir / "key" / "channel.pem").read_text() == current.file_text()
    assert not list(plain.state.glob("*.rekey")) and not list(plain.state.glob("*.new"))
    assert not [p.name for p in (plain.dir / "work").iterdir() if ".new" in p.name or ".old" in p.name]
    plain.push("next", term=3, seq=5)
    assert plain.get() == (200, "next")


def test_a_rekey_replayed_after_the_next_one_is_refused(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    k1, k2 = ChannelKey.generate(), ChannelKey.generate()
    first = wire.rekey_body(k0, k0, k1, task="task1", generation=1)
    second = wire.rekey_body(k1, k0, k2, task="task1", generation=2)
    assert send_rekey(plain, first) == "rekeyed to generation 1"
    plain.key = k1
    assert send_rekey(plain, second) == "rekeyed to generation 2"
    plain.key = k2
    for body in (first, second, wire.rekey_body(k1, k0, ChannelKey.generate(), task="task1", generation=3)):
        outcome = send_rekey(plain, body)  # signed with a key that is no longer the current one
        assert outcome == "refused a rekey: not a swarmgate/3 key header with the current key's MAC"
    assert handshake_fails(plain, k1) and handshake_fails(plain, k0) and plain.status().task == "task1"
    assert (plain.state / "key").read_bytes() == second


def test_a_rekey_may_skip_generations(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    rotate(plain, k0, 7)
    assert plain.status().serving == "" and (plain.dir / "status-g7").exists()


def test_after_a_restart_the_new_key_still_rules_and_the_last_config_still_serves(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    plain.push("routes", term=5, seq=5)
    k1 = rotate(plain, k0, 1)
    restart(plain, k0)
    wait_for(lambda: plain.get() == (200, "routes"), timeout=10,
             what="the saved config (no fall back to the bootstrap)")
    assert "key generation 1, fence term 0 seq 0" in plain.log()
    assert "not signed" not in plain.log() and "ignored" not in plain.log()
    status = plain.status()  # with k1
    assert (status.serving, status.term, status.seq) == (digest_of(plain.conf("routes")), 0, 0)
    assert handshake_fails(plain, k0)
    plain.put(plain.signed(plain.conf("evil"), term=9, seq=9, key=k0))
    assert plain.outcomes()[-1] == "refused a push"
    plain.push("next", term=1, seq=1)
    # The next task on this node starts from the same key and the config pushed under it.
    restart(plain, k0, task="task2")
    wait_for(lambda: plain.get() == (200, "next"), timeout=10, what="the config pushed under the new key")
    assert handshake_fails(plain, k0)
    assert plain.status() == wire.AgentStatus(task="task2", serving=digest_of(plain.conf("next")), term=1, seq=1)
    k2 = rotate(plain, k0, 2)  # the rekey names the new task
    assert k2 is plain.key and handshake_fails(plain, k1)


@pytest.mark.parametrize("tamper", ["text", "text-and-sum", "another-bootstrap", "garbage"])
def test_a_tampered_saved_key_is_ignored_for_the_bootstrap_key(plain: Proxy, tamper: str) -> None:
    k0 = plain.key
    assert k0 is not None
    plain.push("routes", term=5, seq=5)
    k1 = rotate(plain, k0, 1)
    plain.stop_agent()
    saved = plain.state / "key"
    header, _, text = saved.read_text().partition("\n")
    other = ChannelKey.generate()
    if tamper == "text":
        saved.write_text(f"{header}\n{other.file_text()}")
    elif tamper == "text-and-sum":
        saved.write_text(f"{header.replace(digest_of(text), digest_of(other.file_text()))}\n{other.file_text()}")
    elif tamper == "another-bootstrap":  # made by someone without K0
        saved.write_bytes(wire.rekey_body(k1, ChannelKey.generate(), other, task="task1", generation=2))
    else:
        saved.write_text("not a key\n")
    plain.start_agent(key_text=k0.file_text())
    wait_for(lambda: plain.log().count("nginx started") == 2 and plain.get() == (503, "bootstrap"), timeout=10,
             what="the bootstrap")
    why = {"text": "the key's sha256 is not the header's", "text-and-sum": "its origin MAC does not verify",
           "another-bootstrap": "its origin MAC does not verify", "garbage": "not a swarmgate/3 key header"}[tamper]
    (line,) = [line for line in plain.log().splitlines() if "the saved key" in line]
    assert line.startswith(f"swarmgate-agent: the saved key is not a generation of the bootstrap key ({why}")
    assert line.endswith("): ignored, using the bootstrap key")
    # The saved config was signed with k1: it cannot be verified with K0, so it is not served.
    wait_for(lambda: plain.get() == (503, "bootstrap"), timeout=10, what="the bootstrap")
    plain.key = k0
    assert handshake_fails(plain, k1) and handshake_fails(plain, other)
    assert (plain.status().serving, plain.status().term, plain.status().seq) == ("", 0, 0)
    assert (plain.dir / "key" / "channel.pem").read_text() == k0.file_text()


def test_a_start_between_the_saved_key_and_its_config_keeps_the_config(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    plain.push("routes", term=5, seq=5)
    before = {name: (plain.state / name).read_bytes() for name in ("config", "fence")}
    rotate(plain, k0, 1)
    plain.stop_agent()
    # As if the agent died after renaming the new key into place, before the rest.
    (plain.state / "config").rename(plain.state / "config.rekey")
    for name, data in before.items():
        (plain.state / name).write_bytes(data)
    plain.start_agent(key_text=k0.file_text())
    wait_for(lambda: plain.get() == (200, "routes"), timeout=10, what="the re-signed config")
    assert "the saved fence is not signed with the channel key: ignored" in plain.log()
    assert (plain.status().term, plain.status().seq) == (0, 0)
    assert not (plain.state / "config.rekey").exists()
    # And a start before the key was renamed: the staged config is dropped, the old key rules.
    plain.stop_agent()
    (plain.state / "key").unlink()
    (plain.state / "config").rename(plain.state / "config.rekey")
    for name, data in before.items():
        (plain.state / name).write_bytes(data)
    plain.key = k0
    plain.start_agent(key_text=k0.file_text())
    wait_for(lambda: plain.get() == (200, "routes"), timeout=10, what="the config signed with the old key")
    assert (plain.status().term, plain.status().seq) == (5, 5) and not (plain.state / "config.rekey").exists()


def test_a_rejection_is_still_reported_after_a_rekey(plain: Proxy) -> None:
    k0 = plain.key
    assert k0 is not None
    plain.push("good", term=2, seq=1)
    plain.push("bad", term=2, seq=2, extra="no_such_directive on;")
    rotate(plain, k0, 1)
    status = plain.status()
    assert (status.serving, status.rejected, status.term, status.seq) == (
        digest_of(plain.conf("good")), digest_of(plain.conf("bad", extra="no_such_directive on;")), 0, 0)
    assert 'unknown directive "no_such_directive"' in status.message


def test_requests_are_served_across_rekeys(plain: Proxy) -> None:
    """Routes and the control server keep answering while the key changes three times. The status
    reader acts as the operator: it tries the newest key it knows first, then older ones, and checks
    the status with the key whose certificate the handshake accepted."""
    k0 = plain.key
    assert k0 is not None
    plain.push("routes", term=1, seq=1)
    ring = [k0]  # newest last
    done = threading.Event()
    routes: dict[str, int] = {}
    statuses: dict[str, int] = {}

    def count(tally: dict[str, int], key: str) -> None:
        tally[key] = tally.get(key, 0) + 1

    def hammer() -> None:
        for _ in range(20_000):
            if done.is_set():
                return
            try:
                code, body = plain.get()
                count(routes, str(code) if code == 200 else f"{code} {body}")
            except OSError as err:
                count(routes, type(err).__name__)

    def read_statuses() -> None:
        for _ in range(5_000):
            if done.is_set():
                return
            count(statuses, read_status())

    def read_status() -> str:
        # While nginx reloads, old workers (old certificate) and new ones accept on the same socket:
        # the newest key may meet an old worker and the next key a new one. So: the ring again, soon.
        for attempt in range(3):
            if attempt:
                time.sleep(0.1)
            for n, key in enumerate(reversed(list(ring))):
                try:
                    _, raw = plain.control("GET", wire.STATUS_PATH, context=key.client_context())
                except ssl.SSLCertVerificationError:
                    continue
                except OSError as err:
                    return type(err).__name__
                try:
                    wire.verify_status(raw, key)  # with the key whose certificate the handshake accepted
                except ForgedStatus:
                    return "forged"
                return "ok after a retry" if attempt else "ok after a fall back" if n else "ok"
        return "no key's certificate verified"

    threads = [threading.Thread(target=hammer), threading.Thread(target=read_statuses)]
    for t in threads:
        t.start()
    try:
        for generation in (1, 2, 3):
            new = ChannelKey.generate()
            body = wire.rekey_body(ring[-1], k0, new, task="task1", generation=generation)
            ring.append(new)  # the operator knows the new key before the proxy uses it
            assert send_rekey(plain, body, via=ring[-2]) == f"rekeyed to generation {generation}"
            plain.key = new
            plain.push(f"routes-{generation}", term=1, seq=1 + generation)
    finally:
        done.set()
        for t in threads:
            t.join()
    print(f"routes: {routes}; statuses: {statuses}")
    assert set(routes) == {"200"} and routes["200"] > 100
    assert set(statuses) <= {"ok", "ok after a fall back", "ok after a retry"} and statuses.get("ok", 0) > 10


def test_the_pusher_hands_the_newest_key_to_a_proxy_on_an_older_one_and_then_pushes(plain: Proxy) -> None:
    """The operator's side: a keyring of generations 0 and 2 (1 skipped); the proxy holds 0. One round
    rekeys it to 2 over its generation-0 channel, pushes with the new key, and its fence holds the
    leader's term again at once."""
    k0, k2 = plain.key, ChannelKey.generate()
    assert k0 is not None
    plain.term = 9
    plain.publish("v1")
    plain.push_round()
    assert plain.get() == (200, "v1")
    ring = Keyring(((2, k2), (0, k0)))
    plain.pusher = Pusher(plain.store, lambda: ring, term=lambda: plain.term, push_timeout=10)
    plain.aim(plain.task)
    plain.push_round()
    assert rekeys(plain)[-1] == "rekeyed to generation 2"
    assert handshake_fails(plain, k0)
    plain.key = k2
    status = plain.status()
    # Re-pushed after the rekey although it already served v1: the fence is the leader's term again.
    assert (status.serving, status.term) == (digest_of(plain.conf("v1")), 9)
    plain.publish("v2")
    plain.push_round()
    assert plain.get() == (200, "v2") and plain.record().served_digest == digest_of(plain.conf("v2"))

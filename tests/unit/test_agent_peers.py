"""The control server's address filter, end to end on loopback: the real agent.sh under busybox sh, real
nginx (the harness of `test_agent`). A pushed config names who may use its control server in one line,
`# swarmgate channel peers: NET...`; the agent turns it into `allow`/`deny` in the control file it owns,
so a holder of the channel key elsewhere gets 403. The dead-man rule keeps that from locking the
operator out for good: when no listed peer has used the channel for SWARMGATE_PEER_GRACE seconds, the
key holders refused by address meanwhile are admitted until the next config is applied.

Clients here connect from 127.0.0.1 (the harness's `control`) or, to play a second machine, from
another loopback address (127.0.0.2 and up: Linux routes all of 127/8 to `lo`, so a client can bind
any of them as its source).
"""

from __future__ import annotations

import base64
import http.client
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from swarmgate.models.settings.extension import Extension
from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.renderers.nginx import CONTROL_HOST, control_server
from tests.support import free_port, wait_for
from tests.unit import test_agent as harness
from tests.unit.test_agent import NO_ANSWER, Proxy, digest_of, foreign_context

# The harness's skip mark and fixtures (its autouse one too), as this module's.
pytestmark = harness.pytestmark
_stop_signals_not_ignored = harness._stop_signals_not_ignored
workdir = harness.workdir
plain = harness.plain  # SWARMGATE_PEER_GRACE unset: 60 s, longer than any of these tests waits

GRACE = 3  # SWARMGATE_PEER_GRACE for the dead-man tests
ADMITTED = re.compile(r"^swarmgate-agent: no listed peer used the control server for (\d+) s; admitting (\S+), "
                      r"which presented the channel key", re.MULTILINE)
REPLACED = re.compile(r"^swarmgate-agent: the new config's peers list replaces the addresses admitted without a "
                      r"listed peer: (.*)$", re.MULTILINE)


@dataclass
class GraceProxy(Proxy):
    """A proxy whose agent runs with SWARMGATE_PEER_GRACE set. The harness builds the agent's
    environment inside `start_agent`; this adds to it on its way to Popen."""

    grace: int = GRACE

    def start_agent(self, task: str | None = None, *, key_text: str | None = None) -> None:
        popen: Any = subprocess.Popen

        def with_grace(args: Any, *rest: Any, env: dict[str, str] | None = None, **kw: Any) -> Any:
            if env is not None:
                env = {**env, "SWARMGATE_PEER_GRACE": str(self.grace)}
            return popen(args, *rest, env=env, **kw)

        with mock.patch.object(subprocess, "Popen", with_grace):
            super().start_agent(task, key_text=key_text)


@pytest.fixture
def quick(workdir: Path) -> Iterator[GraceProxy]:
    p = GraceProxy(workdir, free_port(), free_port())
    try:
        yield harness.start(p)  # type: ignore[misc]
    finally:
        p.kill()


def peers_control(p: Proxy, peers: list[str]) -> str:
    """The control server block as the operator renders it, with these peers (normalized by it)."""
    return control_server(Extension.model_validate({"TargetPort": p.port}), control_dir=str(p.dir),
                          listen=f"127.0.0.1:{p.ssl_port} ssl", peers=peers)


def with_peers(p: Proxy, body: str, peers: list[str], **kw: Any) -> str:
    return p.conf(body, control=peers_control(p, peers), **kw)


def push_text(p: Proxy, text: str, *, term: int, seq: int) -> None:
    p.put(p.signed(text, term=term, seq=seq))


def control_file(p: Proxy) -> str:
    return (p.dir / "control" / "server.conf").read_text()


def allows(p: Proxy) -> list[str]:
    return re.findall(r"^allow (\S+);", control_file(p), re.MULTILINE)


def disk_status(p: Proxy) -> wire.AgentStatus:
    """The status the agent wrote, read from its file (for when the control server refuses us)."""
    assert p.key is not None
    return wire.verify_status((p.dir / "status").read_bytes(), p.key)


def admitted(p: Proxy) -> list[str]:
    return [addr for _, addr in ADMITTED.findall(p.log())]


def workers(p: Proxy) -> set[int]:
    master = p.master_pid()
    found = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat_file.read_text().rsplit(")", 1)[1].split()[1]) == master:
                found.add(int(stat_file.parent.name))
        except (OSError, IndexError, ValueError):
            pass
    return found


def request(p: Proxy, method: str, path: str, body: bytes | None = None, *, source: str = "127.0.0.1",
            context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """`Proxy.control` from another source address: by default the operator's request (the channel
    certificate pinned and presented)."""
    assert p.key is not None
    context = context or p.key.client_context()
    raw = socket.create_connection(("127.0.0.1", p.ssl_port), timeout=5, source_address=(source, 0))
    conn = http.client.HTTPConnection(CONTROL_HOST, p.ssl_port, timeout=5)
    try:
        conn.sock = context.wrap_socket(raw, server_hostname=CONTROL_HOST)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
        raw.close()


def wait_for_admission(p: Proxy, source: str = "127.0.0.1", timeout: float = 20.0) -> tuple[float, list[int]]:
    """Ask for the status from `source` every 0.25 s until the agent admits some address; returns
    the seconds that took and the answers seen before."""
    start = time.monotonic()
    codes = []
    while not admitted(p):
        assert time.monotonic() - start < timeout, p.log()
        codes.append(request(p, "GET", wire.STATUS_PATH, source=source)[0])
        time.sleep(0.25)
    return time.monotonic() - start, codes


# -- the filter ----------------------------------------------------------------------------------


def test_without_a_peers_line_every_key_holder_gets_in(plain: Proxy) -> None:
    assert "deny all;" not in control_file(plain) and allows(plain) == []  # the bootstrap names none
    assert request(plain, "GET", wire.STATUS_PATH, source="127.0.0.2")[0] == 200
    plain.push("routes", term=1, seq=1)  # the harness's configs name no peers either
    assert "deny all;" not in control_file(plain)
    assert request(plain, "GET", wire.STATUS_PATH, source="127.0.0.3")[0] == 200


def test_a_listed_peer_pushes_and_reads_the_status(plain: Proxy) -> None:
    text = with_peers(plain, "listed", ["127.0.0.1", "10.9.9.9/32", "2001:db8::/32"])
    assert "\n        # swarmgate channel peers: 10.9.9.9/32 127.0.0.1/32 2001:db8::/32\n" in text
    push_text(plain, text, term=1, seq=1)
    assert plain.get() == (200, "listed") and plain.status().serving == digest_of(text)
    assert allows(plain) == ["10.9.9.9/32", "127.0.0.1/32", "2001:db8::/32"]
    assert re.search(r"^allow 2001:db8::/32;\ndeny all;\n", control_file(plain), re.MULTILINE)
    # The real pusher, from a listed address: reads, pushes, reads again.
    digest = plain.publish("next", control=peers_control(plain, ["127.0.0.0/8"]))
    plain.push_round()
    assert plain.record().served_digest == digest and plain.get() == (200, "next")
    assert allows(plain) == ["127.0.0.0/8"]
    assert request(plain, "GET", wire.STATUS_PATH, source="127.0.0.2")[0] == 200  # in the listed network


def test_an_unlisted_key_holder_gets_403_and_changes_nothing(plain: Proxy) -> None:
    text = with_peers(plain, "elsewhere", ["10.9.9.9/32"])
    push_text(plain, text, term=1, seq=1)  # the last request 127.0.0.1 may make
    assert plain.get() == (200, "elsewhere") and allows(plain) == ["10.9.9.9/32"]
    code, body = plain.control("GET", wire.STATUS_PATH)
    assert code == 403 and b"swarmgate/3" not in body
    evil = with_peers(plain, "evil", ["127.0.0.1/32"])
    code, _ = plain.control("PUT", wire.CONFIG_PATH, plain.signed(evil, term=1, seq=2))
    assert code == 403
    time.sleep(0.6)  # the agent polls its inbox every 0.2 s: nothing may come
    assert plain.outcomes() == ["serving"] and not (plain.dir / "inbox" / "config").exists()
    status = disk_status(plain)
    assert (status.serving, status.rejected, status.term, status.seq) == (digest_of(text), "", 1, 1)
    assert plain.get() == (200, "elsewhere") and allows(plain) == ["10.9.9.9/32"]
    # Without the channel's certificate there is no answer at all, before the address is looked at.
    for context in (foreign_context(None), foreign_context(ChannelKey.generate())):
        assert plain.control("GET", wire.STATUS_PATH, context=context)[0] == NO_ANSWER
    # 60 s of grace (the default) are far off: nobody was admitted.
    assert admitted(plain) == [] and allows(plain) == ["10.9.9.9/32"]


def test_a_config_nginx_rejects_leaves_the_peers_of_the_one_served(plain: Proxy) -> None:
    push_text(plain, with_peers(plain, "good", ["127.0.0.1/32", "10.9.9.9/32"]), term=1, seq=1)
    before = control_file(plain)
    bad = with_peers(plain, "bad", ["10.9.9.9/32"], extra="no_such_directive on;")
    push_text(plain, bad, term=1, seq=2)
    status = plain.status()  # still allowed: the old list is back
    assert status.rejected == digest_of(bad) and 'unknown directive "no_such_directive"' in status.message
    assert control_file(plain) == before and plain.get() == (200, "good")


def _token(bad: str) -> Any:
    return lambda text: text.replace("peers: 10.9.9.9/32", f"peers: 10.9.9.9/32 {bad} 127.0.0.1/32")


BAD_PEERS: dict[str, tuple[Any, str]] = {
    "octet-over-255": (_token("300.1.1.1/32"), "bad token '300.1.1.1/32'"),
    "prefix-over-32": (_token("1.2.3.4/33"), "bad token '1.2.3.4/33'"),
    "ipv6-prefix-over-128": (_token("2001:db8::/129"), "bad token '2001:db8::/129'"),
    "a-word": (_token("abc"), "bad token 'abc'"),
    "a-semicolon": (_token("1.2.3.4;"), "bad token '1.2.3.4;'"),
    "a-directive": (_token("1.2.3.4/32;allow"), "bad token '1.2.3.4/32;allow'"),
    "no-prefix": (_token("1.2.3.4"), "bad token '1.2.3.4'"),
    "leading-zero": (_token("10.09.9.9/32"), "bad token '10.09.9.9/32'"),
    "two-ipv6-gaps": (_token("1::2::3/64"), "bad token '1::2::3/64'"),
    "a-tab": (lambda text: text.replace("peers: 10.9.9.9/32", "peers: 10.9.9.9/32\t127.0.0.1/32"),
              "bad token '10.9.9.9/32\t127.0.0.1/32'"),
    "two-lines": (lambda text: re.sub(r"(?m)^( *# swarmgate channel peers: .*\n)", r"\1\1", text),
                  "once (2 '# swarmgate channel peers: ' lines found)"),
    "no-network": (lambda text: text.replace("peers: 10.9.9.9/32", "peers: "), "the peers line names no network"),
    "not-at-the-line-start": (lambda text: text.replace("# swarmgate channel peers:", "#swarmgate channel peers:"),
                              "'swarmgate channel peers' may only appear as a line"),
}


@pytest.mark.parametrize("case", list(BAD_PEERS))
def test_a_bad_peers_line_is_rejected_by_policy_and_changes_nothing(plain: Proxy, case: str) -> None:
    edit, why = BAD_PEERS[case]
    push_text(plain, with_peers(plain, "good", ["127.0.0.1/32"]), term=1, seq=1)
    before = control_file(plain)
    bad = edit(with_peers(plain, "bad", ["10.9.9.9/32"]))
    assert bad != with_peers(plain, "bad", ["10.9.9.9/32"])
    push_text(plain, bad, term=1, seq=2)
    status = plain.status()
    assert (status.serving, status.rejected, status.term, status.seq) == (
        digest_of(with_peers(plain, "good", ["127.0.0.1/32"])), digest_of(bad), 1, 2)
    assert status.message.startswith("content policy: ") and why in status.message, status.message
    assert control_file(plain) == before and plain.get() == (200, "good")
    assert plain.outcomes() == ["serving", "rejected"]


# -- the dead-man rule ---------------------------------------------------------------------------


def test_an_unlisted_key_holder_is_admitted_when_no_listed_peer_used_the_channel(quick: GraceProxy) -> None:
    text = with_peers(quick, "elsewhere", ["10.9.9.9/32"])
    push_text(quick, text, term=1, seq=1)
    master, before = quick.master_pid(), workers(quick)
    took, codes = wait_for_admission(quick)
    # Refused while the grace ran (the push itself, a 2xx, started it), then admitted with a reload.
    # The agent logs the admission after the reload, so a poll may already see 200 before the line.
    refused = codes.index(200) if 200 in codes else len(codes)
    assert set(codes[:refused]) == {403} and set(codes[refused:]) <= {200} and refused >= 5, codes
    assert took >= GRACE - 1, took  # whole seconds of /proc/uptime: the grace is at least GRACE - 1 s
    (seconds, address), = ADMITTED.findall(quick.log())
    assert address == "127.0.0.1" and int(seconds) >= GRACE
    assert allows(quick) == ["10.9.9.9/32", "127.0.0.1/32"] and quick.master_pid() == master
    assert workers(quick).isdisjoint(before)
    status = quick.status()
    assert (status.serving, status.term, status.seq) == (digest_of(text), 1, 1)
    # A config that fails nginx -t changes nothing, the admitted address included.
    bad = with_peers(quick, "bad", ["10.9.9.9/32"], extra="no_such_directive on;")
    push_text(quick, bad, term=1, seq=2)
    assert quick.status().rejected == digest_of(bad) and allows(quick) == ["10.9.9.9/32", "127.0.0.1/32"]
    # The admitted address pushes; that config's own list replaces what the agent admitted.
    following = with_peers(quick, "following", ["10.9.9.9/32", "10.9.9.10/32"])
    push_text(quick, following, term=1, seq=3)
    assert quick.get() == (200, "following") and REPLACED.findall(quick.log()) == ["127.0.0.1"]
    assert allows(quick) == ["10.9.9.10/32", "10.9.9.9/32"]
    assert quick.control("GET", wire.STATUS_PATH)[0] == 403
    assert disk_status(quick).serving == digest_of(following)


def test_admitted_addresses_are_forgotten_at_a_restart(quick: GraceProxy) -> None:
    text = with_peers(quick, "elsewhere", ["10.9.9.9/32"])
    push_text(quick, text, term=1, seq=1)
    wait_for_admission(quick)
    assert allows(quick) == ["10.9.9.9/32", "127.0.0.1/32"]
    quick.stop_agent()
    quick.start_agent()
    wait_for(lambda: quick.get() == (200, "elsewhere"), timeout=10, what="the saved config")
    assert allows(quick) == ["10.9.9.9/32"] and quick.control("GET", wire.STATUS_PATH)[0] == 403
    assert "the control server admits 10.9.9.9/32 only" in quick.log()


def test_no_admission_while_a_listed_peer_keeps_using_the_channel(quick: GraceProxy) -> None:
    """Loopback has more than one address: 127.0.0.1 is the listed peer, reading the status every
    second as a leader does; 127.0.0.2, a key holder that is not listed, keeps knocking. Over three
    graces nobody is admitted and nginx is not reloaded; once the listed peer goes quiet, 127.0.0.2
    is admitted after one grace."""
    text = with_peers(quick, "listed", ["127.0.0.1/32"])
    push_text(quick, text, term=1, seq=1)
    before = workers(quick)
    end = time.monotonic() + 3 * GRACE
    while time.monotonic() < end:
        assert request(quick, "GET", wire.STATUS_PATH, source="127.0.0.2")[0] == 403
        assert quick.control("GET", wire.STATUS_PATH)[0] == 200
        last_ok = time.monotonic()
        time.sleep(1)
    assert admitted(quick) == [] and workers(quick) == before and allows(quick) == ["127.0.0.1/32"]
    _, codes = wait_for_admission(quick, source="127.0.0.2")
    assert admitted(quick) == ["127.0.0.2"] and codes[0] == 403
    assert time.monotonic() - last_ok >= GRACE - 1  # a grace after the listed peer's last request
    assert workers(quick) != before  # the reload for the admission, and only for it
    assert allows(quick) == ["127.0.0.1/32", "127.0.0.2/32"]
    assert request(quick, "GET", wire.STATUS_PATH, source="127.0.0.2")[0] == 200


def test_the_dead_man_rule_admits_a_bounded_number_of_addresses(quick: GraceProxy) -> None:
    push_text(quick, with_peers(quick, "elsewhere", ["10.9.9.9/32"]), term=1, seq=1)
    sources = [f"127.0.0.{n}" for n in range(2, 22)]  # 20 refused key holders
    for source in sources:
        assert request(quick, "GET", wire.STATUS_PATH, source=source)[0] == 403
    wait_for(lambda: len(admitted(quick)) == 16, timeout=20, what="the admissions")
    time.sleep(2.5)
    assert len(admitted(quick)) == 16 and set(admitted(quick)) <= set(sources)
    assert "the dead-man rule admits at most 16 addresses" in quick.log()
    assert len(allows(quick)) == 17
    outside = [s for s in sources if s not in admitted(quick)]
    assert len(outside) == 4 and request(quick, "GET", wire.STATUS_PATH, source=outside[0])[0] == 403


def test_nothing_but_a_strict_address_from_the_access_log_reaches_the_control_file(quick: GraceProxy) -> None:
    """The access log is nginx's record of network input. Requests from a refused key holder carry
    address- and directive-looking text wherever a client can put it (the request line, the user
    agent, the referer, the user name of a Basic authorization); lines written straight into the log
    begin with such text where the address should be. Only 127.0.0.1, the address the refused
    requests came from, may be admitted."""
    push_text(quick, with_peers(quick, "elsewhere", ["10.9.9.9/32"]), term=1, seq=1)
    user = '10.66.66.66 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 403 0 "-" "-"\n10.77.77.77 allow all;'
    hostile = {
        "User-Agent": "1.2.3.4; allow all; deny 10.0.0.0/8;",
        "Referer": '" 403 0 "-" "-" 10.88.88.88 - - [x] "GET / HTTP/1.1" 403 ',
        "Authorization": "Basic " + base64.b64encode(user.encode() + b":pw").decode(),
        "X-Forwarded-For": "10.99.99.99",
    }
    for path in ("/swarmgate/v3/status?1.2.3.4;allow%20all;", '/swarmgate/v3/status?a="%20403%20"',
                 "/swarmgate/v3/status"):
        assert request(quick, "GET", path, headers=hostile)[0] == 403
    with open(quick.dir / "control" / "access.log", "a") as log:  # as if nginx had written them
        for first in ("1.2.3.4;", "1.2.3.4;allow", "0.0.0.0/0", "::/0", "all", "010.1.1.1", "1.2.3.4.5",
                      "::ffff:1.2.3.4;", "[::1]", "10.5.5.5%", "-", "2001:db8::1::2", "10.6.6.6\t", "fe80::1%lo"):
            log.write(f'{first} - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 403 0 "-" "-"\n')
        log.write('10.7.7.7 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 403x 0 "-" "-"\n')  # no status
    wait_for_admission(quick)
    time.sleep(2.5)  # one more reading of the access log: still nothing else
    assert admitted(quick) == ["127.0.0.1"]
    assert "could not be admitted" not in quick.log()  # nothing else was tried (nginx -t is no filter here)
    assert allows(quick) == ["10.9.9.9/32", "127.0.0.1/32"]
    text = control_file(quick)
    assert text.count("deny all;") == 1 and text.count("allow ") == 2
    for needle in ("1.2.3.4", "10.66", "10.77", "10.88", "10.99", "0.0.0.0", "::/0", "allow all", "10.5.5.5",
                   "10.6.6.6", "10.7.7.7", "fe80"):
        assert needle not in text, needle


def test_the_pusher_says_how_to_fix_a_proxy_that_refuses_its_address(plain: Proxy,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    push_text(plain, with_peers(plain, "elsewhere", ["10.9.9.9/32"]), term=1, seq=1)
    plain.publish("next", control=peers_control(plain, ["10.9.9.9/32"]))
    with caplog.at_level("WARNING", logger="swarmgate.pusher"):
        plain.push_round()
    assert plain.get() == (200, "elsewhere")
    (line,) = [r.getMessage() for r in caplog.records if "cannot reach proxy task" in r.getMessage()]
    assert "HTTP 403" in line and "ControlSources" in line

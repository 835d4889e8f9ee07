"""`LuaBalancer` through the real agent on loopback: a push that changes only the pools' peers is
applied without a reload, and everything else as before (the harness of tests/unit/test_agent.py).

The pushed configs carry what swarmgate renders for the balancer (its Lua, its upstream, the map of
peers) for one pool, `demo.local`, whose one task moves from one backend to another; the backends
are two servers of the same config. nginx's workers read the agent's peers file from this test's
directory (`env SWARMGATE_PEERS_FILE;` passes the agent's variable to them).
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from tests.factories import node, service, task
from tests.support import free_port, wait_for
from tests.unit import test_agent as harness
from tests.unit.test_agent import Proxy, digest_of
from tests.unit.test_overlay_failover import SILENT, silent_listener

pytestmark = harness.pytestmark
_stop_signals_not_ignored = harness._stop_signals_not_ignored
workdir = harness.workdir

LUA = Extension.model_validate({"Config": {"LuaBalancer": True}})
MODULES = "\n".join(f"load_module /usr/lib/nginx/modules/{m}.so;" for m in ("ndk_http_module", "ngx_http_lua_module"))


def rendered(*peers: tuple[str, int]) -> tuple[str, str]:
    """swarmgate's whole config when demo.local's tasks are `peers` (a node's address, the task's host
    port; one node per address); and the pool's name."""
    demo = service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    # Host and pool names may spell Lua's directives' parts: the agent's policy looks for whole directives.
    named = service("named", {"com.docker.lb.hosts": "by.lua.test,lua.init.by.lua", "com.docker.lb.port": "8080"})
    addresses = sorted({"127.0.0.1", *(address for address, _ in peers)})
    tasks = [task(demo, f"n{addresses.index(address)}", slot=i + 1, ports={8080: port})
             for i, (address, port) in enumerate(peers)]
    observed = ObservedState.from_api(services=[demo, named], tasks=[*tasks, task(named, "n0", ports={8080: 1})],
                                      nodes=[node(f"n{i}", a) for i, a in enumerate(addresses)])
    table = build_route_table(observed, LUA)
    text = render_nginx(LUA, table, server_info="swarmgate/0.1.0 linux/amd64").text
    return text, next(h.paths[0].pool for h in table.hosts if h.host == "demo.local")


def balancer_part(*peers: int | tuple[str, int]) -> tuple[str, str]:
    """What swarmgate renders for the balancer when demo.local's tasks are `peers` (a port on 127.0.0.1,
    or a node's address and a port): from the Lua's first marker to the peers' last; and the pool's name."""
    text, pool = rendered(*(("127.0.0.1", p) if isinstance(p, int) else p for p in peers))
    part = re.search(r"^    # swarmgate lua: begin\n.*^    # swarmgate peers: end\n", text, re.M | re.S)
    assert part is not None and '_init_by_lua "' in part.group(0)
    return part.group(0), pool


@pytest.fixture
def lua_proxy(workdir: Path) -> Iterator[Proxy]:
    p = Proxy(workdir, free_port(), free_port(), env={"SWARMGATE_PEERS_FILE": str(workdir / "peers")})
    try:
        yield harness.start(p)
    finally:
        p.kill()


def workers(master: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                found.add(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_change_of_peers_only_is_served_without_a_reload(lua_proxy: Proxy) -> None:
    a, b, front = free_port(), free_port(), free_port()
    backends = (f"server {{ listen 127.0.0.1:{a}; return 200 \"a\\n\"; }}\n"
                f"  server {{ listen 127.0.0.1:{b}; return 200 \"b\\n\"; }}\n")

    def pushed(backend: int, seq: int) -> str:
        part, pool = balancer_part(backend)
        extra = (f"\n{part}  {backends}  server {{ listen 127.0.0.1:{front}; location / {{ "
                 f"set $swarmgate_pool {pool}; proxy_pass http://swarmgate_balancer; }} }}\n")
        main = f"{MODULES}\nenv SWARMGATE_PEERS_FILE;"
        lua_proxy.push("routes", term=1, seq=seq, main=main, extra=extra)
        return lua_proxy.conf("routes", main=main, extra=extra)

    def front_answer() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{front}/", timeout=5) as resp:
            return str(resp.read().decode().strip())

    first = pushed(a, 1)
    assert lua_proxy.status().serving == digest_of(first)
    assert front_answer() == "a"
    master, before = lua_proxy.master_pid(), workers(lua_proxy.master_pid())

    second = pushed(b, 2)
    assert lua_proxy.status().serving == digest_of(second)
    wait_for(lambda: front_answer() == "b" or None, timeout=5, what="the new peer to answer")
    assert (lua_proxy.master_pid(), workers(master)) == (master, before)  # no reload, the same workers
    assert "peers only, no reload" in lua_proxy.log()
    # A restarted task starts from the saved config, whose own map has the new peer (the file is older).
    lua_proxy.stop_agent()
    harness.start(lua_proxy, ready=(200, "routes"))
    assert front_answer() == "b"
    # Anything else changed with the peers: a reload, as without the balancer.
    master = lua_proxy.master_pid()
    before = workers(master)
    part, pool = balancer_part(a)
    extra = (f"\n{part}  {backends}  server {{ listen 127.0.0.1:{front}; location / {{ "
             f"set $swarmgate_pool {pool}; proxy_pass http://swarmgate_balancer; }} }}\n")
    lua_proxy.push("routes changed", term=1, seq=3, main=f"{MODULES}\nenv SWARMGATE_PEERS_FILE;", extra=extra)
    assert lua_proxy.get() == (200, "routes changed") and front_answer() == "a"
    assert not before & workers(master)


def test_a_change_of_peers_only_still_keeps_to_the_content_policy(lua_proxy: Proxy) -> None:
    """The agent reads only the peers of a peers-only change (the rest is the config it serves): an
    `include` slipped into the peers' map, which nginx would read as config, is refused all the same."""
    backend, front = free_port(), free_port()
    evil = "/var/run/swarmgate-traffic/traffic.log"  # nginx writes it: never to be read as config

    part, pool = balancer_part(backend)

    def config(part: str) -> tuple[str, str]:
        extra = (f"\n{part}  server {{ listen 127.0.0.1:{backend}; return 200 \"a\\n\"; }}\n"
                 f"  server {{ listen 127.0.0.1:{front}; location / {{ "
                 f"set $swarmgate_pool {pool}; proxy_pass http://swarmgate_balancer; }} }}\n")
        return f"{MODULES}\nenv SWARMGATE_PEERS_FILE;", extra

    main, extra = config(part)
    lua_proxy.push("routes", term=1, seq=1, main=main, extra=extra)
    assert lua_proxy.status().serving == digest_of(lua_proxy.conf("routes", main=main, extra=extra))
    sneaked = part.replace('        default "";\n', f'        default "";\n        include {evil};\n', 1)
    assert sneaked != part
    main, bad = config(sneaked)
    lua_proxy.push("routes", term=1, seq=2, main=main, extra=bad)
    status = lua_proxy.status()
    assert status.rejected == digest_of(lua_proxy.conf("routes", main=main, extra=bad))
    assert status.message.startswith("content policy: ") and "include" in status.message, status.message
    assert lua_proxy.get() == (200, "routes")


PEERS = re.compile(r"^    # swarmgate peers: begin\n.*?^    # swarmgate peers: end\n", re.M | re.S)
PATIENCE = 2.5  # the client's timeout, s


def ask(port: int) -> tuple[str, float]:
    """GET / from `port` with the client's patience: the body (or `timeout`) and how long it took."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode().strip(), time.monotonic() - t0
    except TimeoutError:
        return "timeout", time.monotonic() - t0
    finally:
        conn.close()


def test_a_scale_to_two_tasks_and_back_is_peers_only_and_a_silent_task_costs_the_failover_timeout(
        lua_proxy: Proxy) -> None:
    """demo.local scales 1 -> 2 -> 1; the second task is a listener whose accept queue is full (the
    kernel drops its SYNs, as for a node that lost power). The balancer applies the pool's 1.5 s
    connect timeout from the peers (`failover=`), so every request is answered within a 2.5 s client's
    patience; without it the location's 600 s hold one past it. No step reloads nginx."""
    a, silent, front = free_port(), free_port(), free_port()
    one, two = ("127.0.0.1", a), (SILENT, silent)
    # The renderer's side: the scale changes the peers' lines and nothing else.
    assert PEERS.sub("", rendered(one)[0]) == PEERS.sub("", rendered(one, two)[0])
    assert 'failover=1500ms 127.0.0.1:' in rendered(one)[0]
    main = f"{MODULES}\nenv SWARMGATE_PEERS_FILE;"

    def pushed(seq: int, *peers: tuple[str, int], failover: bool = True) -> None:
        part, pool = balancer_part(*peers)
        if not failover:
            part = part.replace("failover=1500ms ", "")
        extra = (f"\n{part}  server {{ listen 127.0.0.1:{a}; return 200 \"a\\n\"; }}\n"
                 f"  server {{ listen 127.0.0.1:{front}; location / {{ "
                 f"set $swarmgate_pool {pool}; proxy_pass http://swarmgate_balancer; }} }}\n")
        lua_proxy.push("routes", term=1, seq=seq, main=main, extra=extra)
        assert lua_proxy.status().serving == digest_of(lua_proxy.conf("routes", main=main, extra=extra))

    def answered_after_a_try_of_the_silent_task() -> tuple[str, float] | None:
        body, took = ask(front)
        return (body, took) if body == "a" and took >= 1.0 else None

    held = silent_listener(silent)
    try:
        pushed(1, one)
        assert ask(front)[0] == "a"
        master, before = lua_proxy.master_pid(), workers(lua_proxy.master_pid())
        # Two tasks without the balancer's timeout: a request that meets the silent task first waits.
        pushed(2, one, two, failover=False)
        wait_for(lambda: ask(front)[0] == "timeout" or None, timeout=15, what="a request held past the client")
        # As rendered: the silent task costs 1.5 s, then the other one answers.
        pushed(3, one, two)
        first = wait_for(answered_after_a_try_of_the_silent_task, timeout=15, what="an answer after a failover")
        answers = [ask(front) for _ in range(4)]
        print(f"with the failover timeout: {first[1]:.2f} s, then {[round(t, 2) for _, t in answers]}")
        assert [body for body, _ in answers] == ["a"] * 4  # every request within the client's patience
        pushed(4, one)
        assert [ask(front)[0] for _ in range(4)] == ["a"] * 4
    finally:
        for sock in held:
            sock.close()
    assert (lua_proxy.master_pid(), workers(master)) == (master, before)  # no reload, the same workers
    assert lua_proxy.log().count("peers only, no reload") == 3

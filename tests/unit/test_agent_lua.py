"""`LuaBalancer` through the real agent on loopback: a push that changes only the pools' peers is
applied without a reload, and everything else as before (the harness of tests/unit/test_agent.py).

The pushed configs carry what swarmgate renders for the balancer (its Lua, its upstream, the map of
peers) for one pool, `demo.local`, whose one task moves from one backend to another; the backends
are two servers of the same config. nginx's workers read the agent's peers file from this test's
directory (`env SWARMGATE_PEERS_FILE;` passes the agent's variable to them).
"""

from __future__ import annotations

import re
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

pytestmark = harness.pytestmark
_stop_signals_not_ignored = harness._stop_signals_not_ignored
workdir = harness.workdir

LUA = Extension.model_validate({"Config": {"LuaBalancer": True}})
MODULES = "\n".join(f"load_module /usr/lib/nginx/modules/{m}.so;" for m in ("ndk_http_module", "ngx_http_lua_module"))


def balancer_part(backend: int) -> tuple[str, str]:
    """What swarmgate renders for the balancer when demo.local's one task is 127.0.0.1:`backend`:
    from the Lua's first marker to the peers' last; and the pool's name."""
    demo = service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    # Host and pool names may spell Lua's directives' parts: the agent's policy looks for whole directives.
    named = service("named", {"com.docker.lb.hosts": "by.lua.test,lua.init.by.lua", "com.docker.lb.port": "8080"})
    tasks = [task(demo, "n0", ports={8080: backend}), task(named, "n0", ports={8080: 1})]
    observed = ObservedState.from_api(services=[demo, named], tasks=tasks, nodes=[node("n0", "127.0.0.1")])
    table = build_route_table(observed, LUA)
    text = render_nginx(LUA, table, server_info="swarmgate/0.1.0 linux/amd64").text
    part = re.search(r"^    # swarmgate lua: begin\n.*^    # swarmgate peers: end\n", text, re.M | re.S)
    assert part is not None and '_init_by_lua "' in part.group(0)
    return part.group(0), next(h.paths[0].pool for h in table.hosts if h.host == "demo.local")


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

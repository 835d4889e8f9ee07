"""`LuaBalancer`: one Lua balancer instead of an `upstream` block per pool, with the machine's real nginx
and lua-nginx-module (Debian's libnginx-mod-http-lua) on loopback.

What is checked: which pools the balancer serves and which keep an upstream block, that the agent
admits exactly the Lua the renderer writes, and that requests go round robin over a pool's tasks and
past a task that refuses connections.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning.runtime import AGENT_SCRIPT
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import MODULES_DIR, localized, nginx_binary
from tests.factories import node, service, task
from tests.support import free_port, wait_for

INFO = "swarmgate/0.1.0 linux/amd64"
SECTION = re.compile(r"^    # swarmgate lua: begin\n.*?^    # swarmgate lua: end\n", re.M | re.S)


def ext(**config: object) -> Extension:
    return Extension.model_validate({"Config": {"LuaBalancer": True, **config}})


def lb(hosts: str, **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


def state(ports: list[int], *, address: str = "10.1.0.10") -> ObservedState:
    """`demo.local` with one task per port (all on one node), and a sticky `shop.local`."""
    demo = service("demo", lb("demo.local"))
    shop = service("shop", lb("shop.local", sticky_session_cookie="sid"))
    tasks = [task(demo, "n0", slot=i + 1, ports={8080: port}) for i, port in enumerate(ports)]
    return ObservedState.from_api(services=[demo, shop], tasks=[*tasks, task(shop, "n0", ports={8080: 31999})],
                                  nodes=[node("n0", address)])


def test_round_robin_pools_go_to_the_balancer_and_hashing_pools_keep_their_upstream() -> None:
    table = build_route_table(state([30000, 30001]), ext())
    text = render_nginx(ext(), table, server_info=INFO).text
    upstreams = re.findall(r"^    upstream (\S+) \{", text, re.M)
    assert upstreams == ["swarmgate_balancer", next(p.pool for p in table.pools if p.sticky_cookie)]
    demo = next(p.pool for p in table.pools if not p.sticky_cookie)
    # The pool's connect timeout from two tasks on leads its peers (the balancer applies it).
    assert f'        {demo} "failover=1500ms 10.1.0.10:30000 10.1.0.10:30001";  # demo task ' in text
    assert "proxy_pass http://swarmgate_balancer;" in text
    # The shop host hashes its cookie: it leaves the shared server for one of its own.
    assert re.search(r"server_name shop\.local;\n        location / \{\n            proxy_pass http://\S+_shop_local;",
                     text)


def test_off_or_without_a_round_robin_pool_the_config_is_stock_nginx() -> None:
    observed = state([30000])
    plain = Extension.model_validate({})
    assert render_nginx(plain, build_route_table(observed, plain), server_info=INFO).text.count("lua") == 0
    empty = ObservedState.from_api(services=[], tasks=[], nodes=[])
    assert "lua" not in render_nginx(ext(), build_route_table(empty, ext()), server_info=INFO).text


def test_the_agent_admits_exactly_the_lua_the_renderer_writes() -> None:
    text = render_nginx(ext(), build_route_table(state([30000]), ext()), server_info=INFO).text
    (section,) = SECTION.findall(text)
    admitted = re.search(r"^LUA_SHA256=([0-9a-f]{64})$", AGENT_SCRIPT.read_text(), re.M)
    assert admitted is not None
    assert hashlib.sha256(section.encode()).hexdigest() == admitted.group(1), \
        "balancer.lua changed: set LUA_SHA256 in agent.sh to the new section's sha256"
    line = re.search(r"^LUA_BALANCER_LINE='(.*)'$", AGENT_SCRIPT.read_text(), re.M)
    assert line is not None and f"\n{line.group(1)}\n" in text


# -- on loopback: the real nginx with the balancer


BACKEND = """worker_processes 1;
pid {prefix}/backend.pid;
error_log {prefix}/backend.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{ listen 127.0.0.1:{a}; return 200 "a\\n"; }}
    server {{ listen 127.0.0.1:{b}; return 200 "b\\n"; }}
}}
"""


def run_nginx(conf: Path, prefix: Path) -> subprocess.Popen[bytes]:
    binary = nginx_binary()
    assert binary is not None, "nginx is not installed"
    return subprocess.Popen([binary, "-p", str(prefix), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


@pytest.fixture
def balanced(tmp_path: Path) -> Iterator[int]:
    """The rendered config on a free port, for `demo.local` with three tasks: two backends that answer
    `a` and `b`, and a port where nothing listens; the port it serves on."""
    a, b, closed, port = free_port(), free_port(), free_port(), free_port()
    (tmp_path / "backend.conf").write_text(BACKEND.format(prefix=tmp_path, a=a, b=b))
    text = render_nginx(ext(), build_route_table(state([a, closed, b], address="127.0.0.1"), ext()),
                        server_info=INFO).text
    (tmp_path / "modules").symlink_to(MODULES_DIR)
    local = localized(text, tmp_path, None).replace("include /var/lib/swarmgate/control/*.conf;", "")
    local = re.sub(r"listen 443 ssl (http2 )?default_server;", f"listen 127.0.0.1:{free_port()} default_server;",
                   local)
    local = re.sub(r"\n    server \{\n        listen 443 ssl;\n        server_name swarmgate-control\.invalid;\n"
                   r"\s*\n    \}\n", "\n", local)
    (tmp_path / "nginx.conf").write_text(re.sub(r"listen 80( default_server)?;", rf"listen 127.0.0.1:{port}\1;", local))
    servers = [run_nginx(tmp_path / "backend.conf", tmp_path), run_nginx(tmp_path / "nginx.conf", tmp_path)]
    try:
        wait_for(lambda: get(port)[0] == 200 or None, timeout=10, what="the balanced proxy")
        yield port
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)


def get(port: int) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "demo.local"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip()
    except OSError:
        return 0, ""
    finally:
        conn.close()


def test_requests_take_the_tasks_in_turn_and_pass_a_task_that_refuses_connections(balanced: int) -> None:
    answers = [get(balanced) for _ in range(12)]
    # Every request is answered, the closed task's turns by the task after it in the pool.
    assert {status for status, _ in answers} == {200}
    assert sorted({body for _, body in answers}) == ["a", "b"]

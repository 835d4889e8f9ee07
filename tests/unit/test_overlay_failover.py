"""Fast failover from a task that does not answer a connect, in a real nginx on loopback; which pools
fail over fast (two or more tasks, host mode or overlay), and where the timeout is set.

Two tasks of one service on an overlay network (task mode), rendered by swarmgate: one answers, the
other is a listener whose accept queue is full, so the kernel drops every SYN to it, as an overlay
address an LB node cannot reach yet (or any more) drops them. A client that waits 2.5 s gets every
POST answered by the live task: the connect to the silent one gives up after the pool's failover
timeout and nginx tries the other task (nothing was sent, so a POST is retried too). With
`ConnectTimeout`'s 600 s alone, the same request waits on TCP's SYN retries until the client gives up.
A host-mode task on a node that lost power is the same case (tests/lab/faults.py's worker-power-cut
row); under LuaBalancer the balancer sets the timeout (tests/unit/test_agent_lua.py).
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.validate import localized, nginx_binary
from tests.factories import node, overlay_network, service, task
from tests.unit.test_https_loopback import free_port
from tests.unit.test_policies_loopback import INFO, Named, running_nginx

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="needs nginx")

NET = overlay_network("front")
LIVE, SILENT = "127.0.0.1", "127.0.0.2"  # the two tasks' overlay addresses, both on loopback
PATIENCE = 2.5  # the client's timeout, s


def silent_listener(port: int) -> list[socket.socket]:
    """A listener on SILENT:port whose accept queue is full: further SYNs are dropped, never refused."""
    listener = socket.socket()
    listener.bind((SILENT, port))
    listener.listen(0)
    held = [listener]
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex((SILENT, port))
        held.append(c)
    return held


def rendered(port: int, proxy_port: int) -> str:
    svc = service("web", {"com.docker.lb.hosts": "web.local", "com.docker.lb.port": str(port)}, host_ports=(),
                  networks={NET["Id"]: "127.0.0.9"})
    tasks = [task(svc, "wrk-0", slot=1, addresses={NET["Id"]: LIVE}),
             task(svc, "wrk-0", slot=2, addresses={NET["Id"]: SILENT})]
    observed = ObservedState.from_api(services=[svc], tasks=tasks, nodes=[node("wrk-0", "127.0.0.1")],
                                      networks=[NET])
    ext = Extension.model_validate({"name": "default", "PublishMode": "host", "HitlessServiceUpdate": False,
                                    "TargetPort": proxy_port, "PublishedPort": proxy_port,
                                    "TargetSSLPort": free_port(), "PublishedSSLPort": 443})
    table = build_route_table(observed, ext)
    assert table.set_aside == () and len(table.hosts[0].paths[0].upstreams) == 2
    return render_nginx(ext, table, server_info=INFO).text


@contextlib.contextmanager
def run_nginx(text: str, prefix: Path, proxy_port: int) -> Iterator[None]:
    prefix.mkdir()
    local = localized(text, prefix, None).replace(f"listen {proxy_port}", f"listen 127.0.0.1:{proxy_port}")
    with running_nginx(local, prefix, proxy_port):
        yield


def post(proxy_port: int) -> tuple[int, str] | str:
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=PATIENCE)
    try:
        conn.request("POST", "/", body=b"order=1", headers={"Host": "web.local"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip()
    except TimeoutError:
        return "timeout"
    finally:
        conn.close()


def live_task(port: int) -> http.server.ThreadingHTTPServer:
    """The task that answers, on LIVE:port (its body: `live`)."""
    server = http.server.ThreadingHTTPServer((LIVE, port), Named)
    server.name = "live"  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("failover", [True, False], ids=["rendered", "without-the-failover-timeout"])
def test_a_post_to_a_silent_overlay_task_is_answered_by_the_other_one(tmp_path: Path, failover: bool) -> None:
    port, proxy_port = free_port(), free_port()
    server = live_task(port)
    held = silent_listener(port)
    text = rendered(port, proxy_port)
    assert "proxy_connect_timeout 1500ms;" in text
    if not failover:
        text = text.replace("proxy_connect_timeout 1500ms;", "")
    try:
        with run_nginx(text, tmp_path / "nginx", proxy_port):
            # Round robin: one of the first two requests meets SILENT first.
            answers = [post(proxy_port) for _ in range(4)]
    finally:
        server.shutdown()
        server.server_close()
        for s in held:
            s.close()
    if failover:
        assert answers == [(200, "live")] * 4
    else:
        assert "timeout" in answers, answers


def _render(labels: dict[str, str], addresses: tuple[str, ...], *, connect_timeout: int = 600,
            overlay: bool = True, lua: bool = False) -> str:
    labels = {"com.docker.lb.hosts": "web.local", "com.docker.lb.port": "8080", **labels}
    if overlay:
        svc = service("web", labels, host_ports=(), networks={NET["Id"]: "198.19.1.2"})
        tasks = [task(svc, f"wrk-{i}", slot=i + 1, addresses={NET["Id"]: a}) for i, a in enumerate(addresses)]
    else:
        svc = service("web", labels)
        tasks = [task(svc, f"wrk-{i}", slot=i + 1, ports={8080: 30000 + i}) for i in range(len(addresses))]
    ext = Extension.model_validate({"name": "default", "PublishMode": "host",
                                    "Config": {"ConnectTimeout": connect_timeout, "LuaBalancer": lua}})
    observed = ObservedState.from_api(services=[svc], tasks=tasks, networks=[NET],
                                      nodes=[node(f"wrk-{i}", f"198.18.0.{16 + i}") for i in range(3)])
    table = build_route_table(observed, ext)
    assert len(table.hosts[0].paths[0].upstreams) == len(addresses), table.set_aside
    return render_nginx(ext, table, server_info=INFO).text


@pytest.mark.parametrize(("labels", "addresses", "more", "expected"), [
    ({}, ("198.19.1.3", "198.19.1.4"), {}, ["proxy_connect_timeout 1500ms;"]),
    ({"swarmgate.rate_limit": "5r/s"}, ("198.19.1.3", "198.19.1.4"), {}, ["proxy_connect_timeout 1500ms;"]),
    ({}, ("198.19.1.3", "198.19.1.4"), {"connect_timeout": 1}, ["proxy_connect_timeout 1000ms;"]),
    ({"swarmgate.connect_timeout": "5s"}, ("198.19.1.3", "198.19.1.4"), {}, ["proxy_connect_timeout 5000ms;"]),
    ({}, ("198.19.1.3",), {}, []),  # one task: nothing else to try, TCP's retries are its best chance
    ({}, ("a", "b"), {"overlay": False}, ["proxy_connect_timeout 1500ms;"]),  # host mode: the same rule
    ({}, ("a",), {"overlay": False}, []),
    ({"swarmgate.connect_timeout": "5s"}, ("a", "b"), {"overlay": False}, ["proxy_connect_timeout 5000ms;"]),
    # LuaBalancer: the balancer applies it from the peers (below), so a scale changes only the peers.
    ({}, ("a", "b"), {"overlay": False, "lua": True}, []),
    ({"swarmgate.connect_timeout": "5s"}, ("a", "b"), {"overlay": False, "lua": True},
     ["proxy_connect_timeout 5000ms;"]),
], ids=["shared-server", "own-location", "ConnectTimeout-below", "label-wins", "one-task", "host-mode",
        "host-mode-one-task", "host-mode-label-wins", "lua", "lua-label-wins"])
def test_which_pools_fail_over_fast(labels: dict[str, str], addresses: tuple[str, ...], more: dict[str, Any],
                                    expected: list[str]) -> None:
    lines = [line.strip() for line in _render(labels, addresses, **more).splitlines()
             if line.strip().startswith("proxy_connect_timeout") and line.strip().endswith("ms;")]
    assert lines == expected


@pytest.mark.parametrize(("labels", "more", "expected"), [
    ({}, {}, "failover=1500ms "),
    ({}, {"connect_timeout": 1}, "failover=1000ms "),
    ({"swarmgate.connect_timeout": "5s"}, {}, ""),  # the label's value, in the location, wins
], ids=["default", "ConnectTimeout-below", "label-wins"])
def test_the_balancers_peers_carry_the_pools_failover_timeout(labels: dict[str, str], more: dict[str, Any],
                                                              expected: str) -> None:
    for tasks in (("a",), ("a", "b")):  # the same whatever the scale: only the addresses change
        text = _render(labels, tasks, overlay=False, lua=True, **more)
        (peers,) = [line for line in text.splitlines() if "_web_local \"" in line]
        assert peers.split('"')[1].startswith(f"{expected}198.18.0.16:30000"), peers

"""Interlock's documentation examples on the lab, next to the seed's host-mode route (real engines).

One seed deployment (`scripts/demo.sh up`: the operator, its proxies on lb-00/lb-01, `demo` in host
mode) is shared by every test here; each example is then deployed the way Interlock's documentation
deploys it, with only the image names changed, and checked through every LB node.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.models.configs import Config
from docker.models.secrets import Secret

from tests import docker_api
from tests.lab import http, shared_seed, websocket
from tests.lab.cluster import Lab
from tests.lab.load import Load
from tests.lab.seed_deployment import PROXY, Seed
from tests.support import event_window, wait_for

NETWORK = "parity-front"
# This machine's kernel is built without IPVS (CONFIG_IP_VS is not set), which Swarm's virtual IPs
# and its routing mesh need: a VIP answers nothing here, wherever it is asked from.
IPVS = Path("/proc/net/ip_vs").exists()

# It deploys the seed afresh (`shared_seed.acquire` finds none kept) and removes it, at its own place in
# the suite: run right after other modules that hand the deployment on, lb-00 answered it 503s in two CI
# runs (cause not found; alone, and after the modules before it there, it passes).


@pytest.fixture(scope="module")
def seed(lab: Lab) -> Iterator[Seed]:
    s = Seed(lab, log=lambda msg: print(f"[parity] {msg}", flush=True))
    shared_seed.acquire(s)
    _remove_parity_objects(s.client())  # what an interrupted run left
    s.cli("network", "create", "-d", "overlay", NETWORK, check=False)  # kept by an interrupted run
    try:
        yield s
    finally:
        client = s.client()
        for svc in client.services.list():
            if svc.name.startswith("parity-"):
                docker_api.remove(svc)
        s.undeploy()
        # The proxy is gone with demo.sh down; the network goes once its tasks have left it.
        with contextlib.suppress(RuntimeError):
            wait_for(lambda: _removed(client, NETWORK), timeout=60, what=f"{NETWORK} removed")
        _remove_parity_objects(client)
        s.close()


def _remove_parity_objects(client: docker.DockerClient) -> None:
    objects: list[Secret | Config] = [*client.secrets.list(), *client.configs.list()]
    for obj in objects:
        if (obj.name or "").startswith("parity-"):
            with contextlib.suppress(docker.errors.APIError):
                obj.remove()


def _removed(client: docker.DockerClient, name: str) -> bool:
    try:
        client.networks.get(name).remove()
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False
    return True


def _canary_pool_seen(address: str, seen: set[str]) -> bool:
    """Ask the canary host ten times through one LB node, add who answered to `seen`; both seen yet?"""
    seen.update(json.loads(http.get(address, "/ping", host="canary.parity.local").body)["metadata"]
                for _ in range(10))
    return seen == {"parity-v1", "parity-v2"}


def _overlay_service(seed: Seed, name: str, labels: dict[str, str], *, replicas: int = 1) -> None:
    """`docker service create --network NET --label ... IMAGE`, as Interlock's documentation does it."""
    args = ["service", "create", "--detach", "--no-resolve-image", "--name", name, "--network", NETWORK,
            "--replicas", str(replicas), "--env", f"METADATA={name}"]
    for key, value in labels.items():
        args += ["--label", f"com.docker.lb.{key}={value}"]
    seed.cli(*args, "swarmgate/demo:lab")


def _answers_everywhere(seed: Seed, host: str, metadata: str) -> dict[str, http.Response] | None:
    out = {}
    for node in seed.lab.lb_nodes:
        try:
            r = http.get(seed.lab.address(node), "/ping", host=host, timeout=2)
        except OSError:
            return None
        if r.status != 200 or f'"metadata":"{metadata}"'.encode() not in r.body:
            return None
        out[node] = r
    return out


def _task_addresses(seed: Seed, service: str) -> set[str]:
    found = set()
    for task in seed.running_tasks(service):
        for att in task.get("NetworksAttachments") or []:
            if att["Network"]["Spec"]["Name"] == NETWORK:
                found |= {a.split("/")[0] for a in att["Addresses"]}
    return found


def test_overlay_service_is_routed_to_its_task_addresses_next_to_the_seeds_host_mode_route(seed: Seed) -> None:
    targets = {n: seed.lab.address(n) for n in seed.lab.lb_nodes}
    before = docker_api.inspect_service(seed.client(), PROXY)["Version"]["Index"]
    with Load(targets, hosts=("demo.local",), rate=20) as load:
        t0 = time.monotonic()
        _overlay_service(seed, "parity-web", {"hosts": "web.parity.local", "port": "8080"}, replicas=2)
        answers = wait_for(lambda: _answers_everywhere(seed, "web.parity.local", "parity-web"), timeout=90,
                           what="parity-web through every LB node")
        joined = time.monotonic() - t0
        time.sleep(2)
    failed = load.failures()
    gaps = {node: round(s.longest_gap_s, 2) for node, s in load.summary().items()}
    spec = docker_api.inspect_service(seed.client(), PROXY)
    # What joining costs (README, "Overlay networks"): Swarm rolls the proxy stop-first, one task at a
    # time, because host-mode ports cannot be bound twice on a node.
    seed.log(f"joining {NETWORK}: routed through every LB node {joined:.1f} s after the service was created; "
             f"{len(failed)} of {len(load.snapshot())} requests to demo.local failed meanwhile "
             f"({sorted({r.reason for r in failed})}), longest gap per LB node {gaps}; "
             f"proxy spec {before} -> {spec['Version']['Index']}")
    network_id = seed.client().networks.get(NETWORK).id
    assert spec["Spec"]["TaskTemplate"]["Networks"] == [{"Target": network_id}]
    addresses = _task_addresses(seed, "parity-web")
    assert len(addresses) == 2
    for node, r in answers.items():
        upstream = r.headers["x-upstream-addr"]
        assert upstream.rsplit(":", 1)[0] in addresses and upstream.endswith(":8080"), (node, upstream)
        assert upstream.startswith("198.19."), (node, upstream)  # the lab's own pool
    # The seed's host-mode route is served beside it by the same proxies, to node address and host port.
    for node in seed.lab.lb_nodes:
        r = http.get(seed.lab.address(node), "/ping", host="demo.local")
        assert r.status == 200 and r.headers["x-upstream-addr"].startswith("198.18.0."), (node, r.headers)


def test_a_route_on_a_network_the_proxy_has_does_not_touch_its_spec(seed: Seed) -> None:
    wait_for(lambda: _answers_everywhere(seed, "web.parity.local", "parity-web"), timeout=90, what="parity-web")
    wait_for(lambda: _proxy_at_rest(seed), timeout=60, what="the proxy's join roll finished")
    with event_window(seed.client(), types=("service",)) as window:
        _overlay_service(seed, "parity-web2", {"hosts": "web2.parity.local", "port": "8080",
                                               "backend_mode": "default"})
        wait_for(lambda: _answers_everywhere(seed, "web2.parity.local", "parity-web2"), timeout=60,
                 what="parity-web2 through every LB node")
        seed.cli("service", "rm", "parity-web2")
        wait_for(lambda: all(http.get(seed.lab.address(n), "/ping", host="web2.parity.local").status == 503
                             for n in seed.lab.lb_nodes), timeout=60, what="parity-web2 gone")
    # Swarm's own update-state transitions carry `updatestate.*`; a write by the operator does not.
    assert [e for e in window.writes_to(PROXY) if "updatestate.new" not in e["Actor"]["Attributes"]] == []
    assert _proxy_at_rest(seed)


def _proxy_at_rest(seed: Seed) -> bool:
    state = (docker_api.inspect_service(seed.client(), PROXY).get("UpdateStatus") or {}).get("State", "completed")
    return state not in ("updating", "rollback_started")


def test_vip_mode_routes_to_the_service_virtual_ip(seed: Seed) -> None:
    _overlay_service(seed, "parity-vip", {"hosts": "vip.parity.local", "port": "8080", "backend_mode": "vip"})

    def vip() -> str | None:
        vips = docker_api.inspect_service(seed.client(), "parity-vip")["Endpoint"].get("VirtualIPs") or []
        return next((v["Addr"].split("/")[0] for v in vips if v.get("Addr")), None)

    address = wait_for(vip, timeout=30, what="parity-vip's VIP")

    def routed() -> dict[str, Any] | None:
        out = {}
        for node in seed.lab.lb_nodes:
            r = http.get(seed.lab.address(node), "/ping", host="vip.parity.local", timeout=5)
            if r.headers.get("x-upstream-addr") != f"{address}:8080":
                return None
            out[node] = r.status
        return out

    statuses = wait_for(routed, timeout=60, what="vip.parity.local proxied to the VIP on every LB node")
    # With IPVS the VIP answers; without it (this machine) nginx reaches the VIP and gets no route.
    assert set(statuses.values()) == ({200} if IPVS else {502}), statuses


# -- Websockets (Interlock's `com.docker.lb.websocket_endpoints`): a real upgrade, then frames both ways


def test_websocket_upgrade_and_echo_through_every_lb_node(seed: Seed) -> None:
    _overlay_service(seed, "parity-ws", {"hosts": "ws.parity.local", "port": "8080", "websocket_endpoints": "/ws"})

    # Upgrades through every LB node in three rounds running: just after a reload, nginx's old worker
    # (the config without the route) may still take a new connection for a moment.
    rounds = [0]

    def upgraded_everywhere() -> bool:
        try:
            for node in seed.lab.lb_nodes:
                websocket.connect(seed.lab.address(node), "/ws", host="ws.parity.local").shut()
        except Exception:
            rounds[0] = 0
            raise
        rounds[0] += 1
        return rounds[0] >= 3

    wait_for(upgraded_everywhere, timeout=90, interval=0.1,
             what="websocket upgrades to ws.parity.local through every LB node, three rounds running")
    tasks = _task_addresses(seed, "parity-ws")
    for node in seed.lab.lb_nodes:
        conn = websocket.connect(seed.lab.address(node), "/ws", host="ws.parity.local")
        try:
            # The 101 came from the service's task, through this node's proxy (the key's accept is checked).
            upstream = conn.headers["x-upstream-addr"]
            assert upstream.rsplit(":", 1)[0] in tasks and upstream.endswith(":8080"), (node, upstream)
            # A masked client frame comes back as an unmasked server frame, text and binary alike.
            text = f"hello through {node}".encode()
            conn.send(websocket.TEXT, text)
            assert conn.receive() == websocket.Frame(fin=True, opcode=websocket.TEXT, masked=False, payload=text)
            blob = bytes(range(256)) * 8  # a 16-bit payload length
            conn.send(websocket.BINARY, blob)
            assert conn.receive() == websocket.Frame(fin=True, opcode=websocket.BINARY, masked=False, payload=blob)
            conn.send(websocket.PING, b"still there?")
            assert conn.receive().opcode == websocket.PONG
            closing = conn.close(1000)
            assert (closing.opcode, closing.payload) == (websocket.CLOSE, b"\x03\xe8"), (node, closing)
        finally:
            conn.shut()
        # The same service's plain HTTP route is served beside its websocket endpoint.
        r = http.get(seed.lab.address(node), "/ping", host="ws.parity.local")
        assert r.status == 200 and b'"metadata":"parity-ws"' in r.body, (node, r.status)


# -- TLS: termination and passthrough on the same port 443 (Interlock's "SSL termination" and "SSL passthrough")

BACKEND_CONF = """user nginx;
events {}
http {
    server {
        listen 8443 ssl;
        ssl_certificate /run/secrets/parity-pass.crt;
        ssl_certificate_key /run/secrets/parity-pass.key;
        location / {
            return 200 "served by the passthrough backend itself\\n";
        }
    }
}
"""


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    cert, key = directory / f"{host}.crt", directory / f"{host}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=DNS:{host}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _tls_get(address: str, host: str, cafile: Path, path: str = "/") -> tuple[dict[str, Any], bytes]:
    """One HTTPS GET with SNI `host`, the certificate checked against `cafile`: (peer cert, raw answer)."""
    http.assert_lab_route(address)
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((address, 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
        return tls.getpeercert() or {}, b"".join(chunks)


@pytest.fixture(scope="module")
def tls_services(seed: Seed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A terminated host (its certificate in Swarm secrets, demo behind it) and a passthrough backend
    that serves its own certificate (the lab's nginx image on 8443), both on the overlay network."""
    tmp = tmp_path_factory.mktemp("tls")
    pass_cert, pass_key = _self_signed(tmp, "pass.parity.local")
    term_cert, term_key = _self_signed(tmp, "tls.parity.local")
    (tmp / "backend.conf").write_text(BACKEND_CONF)
    seed.cli("secret", "create", "parity-pass.crt", str(pass_cert))
    seed.cli("secret", "create", "parity-pass.key", str(pass_key))
    seed.cli("secret", "create", "parity-tls.crt", str(term_cert))
    seed.cli("secret", "create", "parity-tls.key", str(term_key))
    seed.cli("config", "create", "parity-backend.conf", str(tmp / "backend.conf"))
    seed.cli("service", "create", "--detach", "--no-resolve-image", "--name", "parity-pass", "--network", NETWORK,
             "--secret", "parity-pass.crt", "--secret", "parity-pass.key",
             "--config", "src=parity-backend.conf,target=/etc/nginx/nginx.conf",
             "--label", "com.docker.lb.hosts=pass.parity.local", "--label", "com.docker.lb.port=8443",
             "--label", "com.docker.lb.ssl_passthrough=true", "swarmgate/nginx:lab")
    _overlay_service(seed, "parity-tls", {"hosts": "tls.parity.local", "port": "8080",
                                          "ssl_cert": "parity-tls.crt", "ssl_key": "parity-tls.key"})
    yield {"pass": pass_cert, "tls": term_cert}
    client = seed.client()
    for name in ("parity-pass", "parity-tls"):
        with contextlib.suppress(docker.errors.APIError):
            docker_api.remove_service(client, name)


def test_ssl_passthrough_and_termination_share_port_443_on_every_lb_node(seed: Seed,
                                                                        tls_services: dict[str, Path]) -> None:
    def served() -> bool:
        for node in seed.lab.lb_nodes:
            try:
                _, body = _tls_get(seed.lab.address(node), "pass.parity.local", tls_services["pass"])
                _, term = _tls_get(seed.lab.address(node), "tls.parity.local", tls_services["tls"], "/ping")
            except (OSError, ssl.SSLError):
                return False
            if b"passthrough backend itself" not in body or b'"metadata":"parity-tls"' not in term:
                return False
        return True

    wait_for(served, timeout=120, what="passthrough and terminated TLS through every LB node")
    # Served once is not enough: for 100 ms after a reload the old workers still accept, with the config
    # before it (the passthrough host's handshake refused, or the terminated host a 503, right after
    # it was served, in two CI runs). The agent says when only new workers are left.
    wait_for(lambda: all(seed.agent_serves_host(n, "pass.parity.local", "tls.parity.local")
                         for n in seed.lab.lb_nodes), timeout=60, what="the agents serving the TLS routes")
    for node in seed.lab.lb_nodes:
        address = seed.lab.address(node)
        # The backend's own certificate, checked by SNI: the proxy never decrypted the connection.
        cert, body = _tls_get(address, "pass.parity.local", tls_services["pass"])
        assert dict(x[0] for x in cert["subject"])["commonName"] == "pass.parity.local"
        assert b"x-proxy-id" not in body.lower()  # no proxy header: nginx's http side never saw it
        # The terminated host: the proxy's certificate from the Swarm secret, the proxy's headers.
        cert, term = _tls_get(address, "tls.parity.local", tls_services["tls"], "/ping")
        assert dict(x[0] for x in cert["subject"])["commonName"] == "tls.parity.local"
        assert b"x-proxy-id" in term.lower() and b"x-upstream-addr: 198.19." in term.lower()
        # An unknown name is still refused in the handshake (no default backend here).
        with pytest.raises(ssl.SSLError):
            _tls_get(address, "unknown.parity.local", tls_services["tls"])
    # The seed's host-mode route over plain HTTP is untouched.
    for node in seed.lab.lb_nodes:
        assert http.get(seed.lab.address(node), "/ping", host="demo.local").status == 200


# -- Interlock's routing examples on the overlay network: redirects, context root, sticky sessions, canary


def _instance(r: http.Response) -> str:
    return str(json.loads(r.body)["instance"])


def test_redirect_context_root_sticky_session_and_canary_through_every_lb_node(seed: Seed) -> None:
    _overlay_service(seed, "parity-redirect", {"hosts": "old.parity.local,new.parity.local", "port": "8080",
                                               "redirects": "http://old.parity.local,http://new.parity.local"})
    _overlay_service(seed, "parity-root", {"hosts": "root.parity.local", "port": "8080", "context_root": "/app",
                                           "context_root_rewrite": "true"})
    _overlay_service(seed, "parity-sticky", {"hosts": "sticky.parity.local", "port": "8080",
                                             "sticky_session_cookie": "session"}, replicas=2)
    _overlay_service(seed, "parity-v1", {"hosts": "canary.parity.local", "port": "8080"})
    _overlay_service(seed, "parity-v2", {"hosts": "canary.parity.local", "port": "8080"})
    wait_for(lambda: _answers_everywhere(seed, "new.parity.local", "parity-redirect"), timeout=90,
             what="parity-redirect")
    wait_for(lambda: len(_task_addresses(seed, "parity-sticky")) == 2, timeout=60, what="two sticky tasks")

    def all_routed() -> bool:
        for node in seed.lab.lb_nodes:
            # A 200 alone is not enough: for 100 ms or more after a reload (nginx's master pauses
            # before it stops the old workers) the old workers still accept, and answer from the config
            # before the route (a 503 for root.parity.local right after a 200, once). The agent
            # reports the digest only once the old workers are gone.
            if not seed.agent_serves_host(node, "root.parity.local", "old.parity.local", "sticky.parity.local",
                                          "canary.parity.local"):
                return False
            address = seed.lab.address(node)
            root = http.get(address, "/app/ping", host="root.parity.local", timeout=2)
            sticky = http.get(address, "/ping", host="sticky.parity.local", timeout=2)
            if root.status != 200 or sticky.status != 200:
                return False
            sticky_pool = {u.split(":")[0] for u in [sticky.headers.get("x-upstream-addr", "")]}
            if not sticky_pool <= _task_addresses(seed, "parity-sticky"):
                return False
            if {http.get(address, "/ping", host="canary.parity.local", timeout=2).status for _ in range(4)} != {200}:
                return False
        return True

    wait_for(all_routed, timeout=90, what="every example routed through every LB node")
    for node in seed.lab.lb_nodes:
        address = seed.lab.address(node)
        # Redirects: the source host answers 302 to the target, with the request's path.
        r = http.get(address, "/ping", host="old.parity.local")
        assert r.status == 302 and r.headers["location"] == "http://new.parity.local/ping", (node, r.headers)
        # Context root with rewrite: /app/ping reaches the service as /ping.
        r = http.get(address, "/app/ping", host="root.parity.local")
        assert r.status == 200 and b'"metadata":"parity-root"' in r.body, (node, r.status)
        assert http.get(address, "/ping", host="root.parity.local").status in (404, 503), node
        # Sticky sessions: one cookie, one task; both tasks serve some cookie. A task that has just
        # started may miss its first requests on the overlay (nginx then tries the next server), so
        # the mapping is read until it holds for every cookie.
        def sticky_tasks() -> set[str] | None:
            seen: set[str] = set()
            for cookie in "abcdefghijklmnop":
                answers = {_instance(http.get(address, "/ping", host="sticky.parity.local",  # noqa: B023
                                              headers={"Cookie": f"session={cookie}"})) for _ in range(3)}
                if len(answers) != 1:
                    return None
                seen |= answers
            return seen if len(seen) == 2 else None  # until the pool holds both tasks

        wait_for(sticky_tasks, timeout=60, what=f"one task per cookie, both tasks used, on {node}")
        # Canary: two services on one host share its pool. A fresh overlay task can miss a first
        # request (its address not yet known on this node's overlay); nginx then retries the other
        # service and sets the first aside for fail_timeout (10 s), so both are asked for over a
        # longer window than that, never expecting the split in one burst.
        seen_canary: set[str] = set()
        wait_for(lambda: _canary_pool_seen(address, seen_canary), timeout=30, interval=0.5,  # noqa: B023
                 what=lambda: f"both canary services answering on {node}: saw {sorted(seen_canary)}")  # noqa: B023

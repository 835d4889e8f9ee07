"""The reconciler on a real Swarm (issue: observe, diff, converge the proxy hitlessly).

Each test starts the operator as a host process over a clean lab Swarm, drives the Swarm the way a
user would (services with Interlock labels, scaling, removal, restarts) and looks at what a user
sees: HTTP answers from every LB node, the proxy's tasks, and Docker's own event stream.
"""

from __future__ import annotations

import http.client as httplib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import docker
import pytest

from swarmgate.operator.planning.leadership import LEASE_NAME
from tests import docker_api
from tests.lab import http
from tests.lab.cluster import REPO, Lab
from tests.lab.operator_fixture import (
    PROXY,
    RunningOperator,
    _remove_when_unused,
    answers_everywhere,
    clean_swarm,
    create_routed,
    operator,
    proxy_tasks,
    running_upstreams,
)
from tests.support import event_window, free_port, wait_for

pytestmark = pytest.mark.lab

DEMO_LABELS = {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"}


@pytest.fixture
def op(lab: Lab, tmp_path: Path) -> Iterator[RunningOperator]:
    with operator(lab, tmp_path, services=("demo", "other", "late")) as running:
        yield running


def test_demo_answers_on_every_lb_node_from_its_task(lab: Lab, client: docker.DockerClient,
                                                     op: RunningOperator) -> None:
    started = time.monotonic()
    create_routed(client, "demo", DEMO_LABELS)
    expected = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="a running demo task")
    wait_for(lambda: answers_everywhere(lab, "demo.local", expected), timeout=30, what="demo.local on every LB")
    print(f"demo routed {time.monotonic() - started:.1f}s after create")
    r = http.get(lab.address(lab.lb_nodes[0]), "/ping", host="demo.local", headers={"x-request-id": "abc123"})
    body = json.loads(r.body)
    assert body["metadata"] == "demo"
    assert body["request_id"] == r.headers["x-request-id"] == "abc123"
    assert r.headers["x-server-info"].startswith("swarmgate/")
    # The proxies run only where the loadbalancer label pins them.
    lb_ids = {n["ID"] for n in client.api.nodes() if n["Spec"]["Labels"].get("nodetype") == "loadbalancer"}
    assert set(proxy_tasks(client).values()) <= lb_ids


def test_a_task_whose_ipv6_binding_got_another_port_is_routed_on_its_ipv4_one(
        lab: Lab, client: docker.DockerClient, op: RunningOperator) -> None:
    # Docker 20.10 binds a host-mode publish on IPv4 and on IPv6, with a port from each family's own
    # allocator, and lists both in PortStatus (IPv4 first). They drift apart (a container publishing
    # on IPv4 only moves the IPv4 allocator alone), and then the IPv6 port, asked on the node's IPv4
    # address, is whatever holds it there. A CI run routed 75 of 300 hosts to such ports.
    node = lab.plain_workers[-1]
    engine = lab.client(node)

    def squatter(port: int | None) -> bool:
        """The demo backend, answering "squatter", published on IPv4 only (at `port`, or where Docker
        picks). Docker may pick a port its own bookkeeping still holds ("port is already allocated",
        seen on the lab); each try moves its IPv4 allocator on, which is all the first one is for."""
        for _ in range(5):
            c = engine.containers.create("swarmgate/demo:lab", environment={"METADATA": "squatter"},
                                         labels={"swarmgate.test": "squatter"},
                                         # (ip,) is the SDK's "any port on that address"; its stubs omit it.
                                         ports={"8080/tcp": ("0.0.0.0", port) if port  # type: ignore[dict-item]
                                                else ("0.0.0.0",)})
            try:
                c.start()
                return True
            except docker.errors.APIError as exc:
                c.remove(force=True)
                if "already allocated" not in str(exc):
                    raise
        return False

    try:
        squatter(None)  # in case both allocators were in step: now they are not
        docker_api.create_service(client,
            task_template={"ContainerSpec": {"Image": "swarmgate/demo:lab", "Env": ["METADATA=demo"]},
                           "Placement": {"Constraints": [f"node.hostname=={node}"]}},
            name="demo", labels=DEMO_LABELS,
            endpoint_spec={"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]})
        task = wait_for(lambda: next(iter(t for t in docker_api.tasks(client, filters={"service": "demo"})
                                          if t["Status"]["State"] == "running"), None),
                        timeout=60, what="a running demo task")
        ipv4, ipv6 = (p["PublishedPort"] for p in task["Status"]["PortStatus"]["Ports"])
        assert ipv4 != ipv6, f"both bindings got port {ipv4}: nothing to tell apart"
        # The IPv6 port on the IPv4 address now answers, wrongly (or something held it there already).
        squatter(ipv6)
        expected = {f"{lab.address(node)}:{ipv4}"}
        assert running_upstreams(client, "demo") == expected
        wait_for(lambda: answers_everywhere(lab, "demo.local", expected), timeout=20, what="demo on its IPv4 port")
        for lb in lab.lb_nodes:
            bodies = [json.loads(http.get(lab.address(lb), "/ping", host="demo.local").body) for _ in range(8)]
            assert {b["metadata"] for b in bodies} == {"demo"}, (lb, bodies)
    finally:
        for c in engine.containers.list(all=True, ignore_removed=True, filters={"label": "swarmgate.test=squatter"}):
            c.remove(force=True)
        engine.close()


def test_unknown_host_gets_503(lab: Lab, op: RunningOperator) -> None:
    wait_for(op.converged, timeout=30, what="proxies to serve the first config")
    wait_for(lambda: all(http.get(lab.address(n), "/ping", host="nobody.local").status == 503
                         for n in lab.lb_nodes), timeout=30, what="503 for an unknown host on every LB node")


def running_exactly(client: docker.DockerClient, service: str, count: int) -> set[str] | None:
    """The service's running upstreams, once there are exactly `count` of them."""
    upstreams = running_upstreams(client, service)
    return upstreams if len(upstreams) == count else None


def test_scaling_changes_upstreams_in_place_without_restarting_proxies(
        lab: Lab, client: docker.DockerClient, op: RunningOperator) -> None:
    demo = create_routed(client, "demo", DEMO_LABELS)
    one = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="a running demo task")
    wait_for(lambda: answers_everywhere(lab, "demo.local", one), timeout=30, what="one upstream")
    proxies_before = proxy_tasks(client)
    for replicas in (3, 1):
        docker_api.scale(client, demo, replicas)
        wanted = wait_for(partial(running_exactly, client, "demo", replicas), timeout=60,
                          what=f"{replicas} running demo tasks")
        wait_for(partial(answers_everywhere, lab, "demo.local", wanted), timeout=30,
                 what=f"upstreams == the {replicas} running tasks")
    assert proxy_tasks(client) == proxies_before, "a route change restarted a proxy task"


def test_removed_service_gets_503_and_its_neighbour_is_untouched(
        lab: Lab, client: docker.DockerClient, op: RunningOperator) -> None:
    create_routed(client, "other", {"com.docker.lb.hosts": "other.local", "com.docker.lb.port": "8080"})
    demo = create_routed(client, "demo", DEMO_LABELS)
    other_up = wait_for(lambda: running_upstreams(client, "other"), timeout=60, what="other running")
    demo_up = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="demo running")
    wait_for(lambda: answers_everywhere(lab, "demo.local", demo_up) and answers_everywhere(lab, "other.local",
                                                                                          other_up),
             timeout=30, what="both routed")
    docker_api.remove_service(client, demo)
    deadline = time.monotonic() + 30
    other_failures = 0
    while time.monotonic() < deadline:
        statuses = {http.get(lab.address(n), "/ping", host="demo.local").status for n in lab.lb_nodes}
        for n in lab.lb_nodes:
            other_failures += http.get(lab.address(n), "/ping", host="other.local").status != 200
        if statuses == {503}:
            break
        time.sleep(0.1)
    assert statuses == {503}
    assert other_failures == 0


def test_restart_on_a_converged_swarm_writes_nothing(
        lab: Lab, client: docker.DockerClient, op: RunningOperator) -> None:
    create_routed(client, "demo", DEMO_LABELS)
    expected = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="demo running")
    wait_for(lambda: answers_everywhere(lab, "demo.local", expected), timeout=30, what="demo routed")
    configs_before = sorted(c.name for c in client.configs.list())
    with event_window(client) as window:
        assert op.stop() == 0
        op.start()
        wait_for(op.converged, timeout=30, what="agents to report to the restarted operator")
        op.wait_full_passes(3)
    # A host-process operator holds the leader lease as a process: it hands it back on SIGTERM, takes
    # it again and renews it (README, "Several operators"). Nothing else may be written.
    assert [e for e in window.writes() if e.get("Actor", {}).get("Attributes", {}).get("name") != LEASE_NAME] == []
    assert sorted(c.name for c in client.configs.list()) == configs_before
    assert answers_everywhere(lab, "demo.local", expected)


def test_sigkill_between_config_create_and_service_update_is_repaired(
        lab: Lab, client: docker.DockerClient, tmp_path: Path) -> None:
    # Plain delivery: every route change is a new Swarm config and an update of the proxy service.
    with operator(lab, tmp_path, extension_extra="    HitlessServiceUpdate = false\n",
                  services=("demo", "late")) as op:
        create_routed(client, "demo", DEMO_LABELS)
        demo_up = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="demo running")
        wait_for(lambda: answers_everywhere(lab, "demo.local", demo_up), timeout=90, what="demo routed")
        op.stop()
        version_before = docker_api.inspect_service(client, PROXY)["Version"]["Index"]
        create_routed(client, "late", {"com.docker.lb.hosts": "late.local", "com.docker.lb.port": "8080"})
        late_up = wait_for(lambda: running_upstreams(client, "late"), timeout=60, what="late running")
        op.proc = None
        op.log_path.write_text("")
        killed = _start_expecting_kill(op)
        assert killed == -9
        assert "create config interlock-proxy.proxy-config." in op.log_text()
        assert docker_api.inspect_service(client, PROXY)["Version"]["Index"] == version_before, "update ran before kill"
        op.start()
        wait_for(lambda: answers_everywhere(lab, "late.local", late_up), timeout=90, what="late routed after repair")
        # Proxy configs only: the leader lease is an owned config too, and is never collected.
        owned = [c for c in client.configs.list(filters={"label": "swarmgate.managed-by=swarmgate"})
                 if c.attrs["Spec"]["Labels"].get("swarmgate.kind") != "leader"]
        names = [c.name for c in owned]
        assert len(names) == len(set(names))
        assert len(names) <= 1 + 3, names  # the one in use, plus the retention
        assert [s.name for s in client.services.list(filters={"name": PROXY})] == [PROXY]


def _start_expecting_kill(op: RunningOperator) -> int:
    log = op.log_path.open("ab")
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "swarmgate"), "-D", "run", "-c", str(op.config_path)],
                            stdout=log, stderr=log, env={**os.environ, "SWARMGATE_FAILPOINT": "after:CreateConfig"})
    return proc.wait(timeout=30)


def test_operator_reconnects_after_its_engine_restarts_and_converges_again(
        lab: Lab, client: docker.DockerClient, op: RunningOperator) -> None:
    wait_for(op.converged, timeout=30, what="first config served")
    manager = lab.managers[0]
    subprocess.run([sys.executable, str(REPO / "lab" / "lab.py"), "restart-engine", manager], check=True,
                   timeout=120)
    assert op.proc is not None and op.proc.poll() is None, "the operator exited when Docker went away"
    fresh = lab.manager_client()
    try:
        wait_for(lambda: fresh.api.nodes(), timeout=60, what="the restarted manager to answer")
        create_routed(fresh, "late", {"com.docker.lb.hosts": "late.local", "com.docker.lb.port": "8080"})
        late_up = wait_for(lambda: running_upstreams(fresh, "late"), timeout=90, what="late running")
        wait_for(lambda: answers_everywhere(lab, "late.local", late_up), timeout=60,
                 what="late routed by the reconnected operator")
    finally:
        fresh.close()
    assert "docker reachable again" in op.log_text()


def test_status_shows_each_proxy_task_serving_the_current_config(
        lab: Lab, client: docker.DockerClient, op: RunningOperator) -> None:
    wait_for(op.converged, timeout=30, what="proxies current")
    out = subprocess.run([str(REPO / ".venv" / "bin" / "swarmgate"), "status", "-c", str(op.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # Proxy rows: indented, after each extension's header row (other lines may say who leads).
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()
            if line.startswith("  ") and line.split()[0] != "TASK"}
    tasks = proxy_tasks(client)
    assert set(rows) == set(tasks)
    for row in rows.values():
        assert row[3] == "yes", row
        assert row[1] in lab.lb_nodes


def test_plan_lists_what_a_pass_would_do_and_exits_0_only_when_converged(lab: Lab, tmp_path: Path) -> None:
    def plan(config: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / ".venv" / "bin" / "swarmgate"), "plan", "-c", str(config)],
                              capture_output=True, text=True, timeout=60)

    with operator(lab, tmp_path) as op:
        op.stop()
        # Nothing of ours exists yet: the plan is the first pass's work, and nothing is written.
        before = lab.manager_client()
        try:
            clean_swarm(before)
            pending = plan(op.config_path)
            assert pending.returncode == 1, pending.stderr
            assert "create service interlock-proxy" in pending.stdout
            assert "create secret swarmgate-channel" in pending.stdout
            assert not before.services.list(filters={"name": PROXY})
        finally:
            before.close()
        op.start()
        wait_for(op.converged, timeout=30, what="proxies current")
        converged = plan(op.config_path)
        assert converged.returncode == 0, converged.stdout + converged.stderr
        assert "nothing to do: converged" in converged.stdout


def test_tls_host_serves_https_with_its_certificate_from_swarm_secrets(
        lab: Lab, client: docker.DockerClient, tmp_path: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=demo.local",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    secrets = [client.secrets.create(name="demo.local.crt", data=(tmp_path / "cert.pem").read_bytes()),
               client.secrets.create(name="demo.local.key", data=(tmp_path / "key.pem").read_bytes())]
    try:
        with operator(lab, tmp_path, services=("demo",)):
            create_routed(client, "demo", {**DEMO_LABELS, "com.docker.lb.ssl_cert": "demo.local.crt",
                                           "com.docker.lb.ssl_key": "demo.local.key"})
            expected = wait_for(lambda: running_upstreams(client, "demo"), timeout=60, what="demo running")
            context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

            def https_ok(node: str) -> bool:
                http.assert_lab_route(lab.address(node))
                conn = httplib.HTTPSConnection(lab.address(node), 443, timeout=5, context=context)
                try:
                    # Connect to the LB node's address, but with SNI and the certificate check for
                    # demo.local, as a browser resolving demo.local to that node would.
                    raw = socket.create_connection((lab.address(node), 443), timeout=5)
                    conn.sock = context.wrap_socket(raw, server_hostname="demo.local")
                    conn.request("GET", "/ping", headers={"Host": "demo.local"})
                    resp = conn.getresponse()
                    return resp.status == 200 and resp.getheader("x-upstream-addr") in expected
                finally:
                    conn.close()

            # Attaching the secrets is a change of the proxy's own spec: the proxy rolls, then serves TLS.
            wait_for(lambda: all(https_ok(n) for n in lab.lb_nodes), timeout=120, what="https on every LB node")
    finally:
        for secret in secrets:
            _remove_when_unused(secret.remove)


def test_readyz_fails_while_docker_is_unreachable_and_healthz_still_answers(tmp_path: Path) -> None:
    # No lab needed: the operator process, its HTTP server and its loop against a socket nobody serves.
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'ListenAddr = "127.0.0.1:{port}"\nDockerURL = "unix://{tmp_path}/no-docker.sock"\n'
                      'PollInterval = "1s"\n\n[Extensions]\n  [Extensions.default]\n'
                      '    ProxyImage = "nginx:alpine"\n    PublishMode = "host"\n')
    proc = subprocess.Popen([sys.executable, "-m", "swarmgate", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        codes = wait_for(lambda: (_status(port, "/healthz"), _status(port, "/readyz")), timeout=15,
                         interval=0.1, what="the operator's HTTP server")
        assert codes == (200, 503)
        # Failed passes are counted as they happen: wait for the counts rather than for a time.
        wait_for(lambda: (_sample(port, "swarmgate_docker_api_errors_total") or 0) >= 1
                 and (_sample(port, 'swarmgate_reconcile_total{result="error"}') or 0) >= 1,
                 timeout=15, what="a failed pass and its Docker error, counted")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _sample(port: int, series: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " ")]
    return values[0] if values else None

"""The private channel's proof: an attacker with everything the Docker API shows and everything on the wire cannot
change what a proxy serves.

On the seed's cluster with the operator running and demo.local routed, this plays the attacks the
issue found, and more: it reads every label, spec, config and secret listing and tries each value as
the old bearer credential; it captures a push with tcpdump in lb-00's namespace, then replays it,
alters it and re-aims it at lb-01; it forges pushes over TLS with no certificate and with one of its
own, from a worker's namespace and from the host; and, as if the key itself had leaked from a proxy,
it tries a stale term, a config that runs workers as root and serves /run/secrets, and one that
drops the control server. After every attempt each proxy still serves exactly what it served (the
agent's own status, read inside the container), demo.local still answers from demo, and nothing
ever answers PWNED.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from swarmgate.operator.delivery.channel_key import ChannelKey
from tests import docker_api
from tests.lab import http
from tests.lab.capture import streams, tcpdump
from tests.lab.cluster import REPO, Lab
from tests.lab.operator_fixture import (
    PROXY,
    RunningOperator,
    operator,
    route_and_wait,
)
from tests.support import wait_for

pytestmark = pytest.mark.lab

SSL_PORT = 443  # the seed's PublishedSSLPort: where the control server answers
STATUS = "cat /var/lib/swarmgate/status*"  # `status`, or `status-gN` under key generation N
SERVICES = ("demo", "extra", "extra2")


@dataclass
class Cluster:
    lab: Lab
    client: docker.DockerClient
    op: RunningOperator
    workdir: Path


@pytest.fixture(scope="module")
def cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("channel-attacks")
    with operator(lab, workdir, services=SERVICES) as op:
        client = lab.manager_client()
        route_and_wait(lab, client, "demo", "demo.local")
        wait_for(op.converged, timeout=30, what="every proxy current")
        yield Cluster(lab, client, op, workdir)
        client.close()


def plain_worker(lab: Lab) -> str:
    """A worker that is not a load balancer: where a hostile neighbour service would run."""
    return next(w for w in lab.workers if w not in lab.lb_nodes)


def proxy_exec(lab: Lab, node: str, *cmd: str) -> str:
    engine = lab.client(node)
    try:
        (container,) = engine.containers.list(
            ignore_removed=True, filters={"label": f"com.docker.swarm.service.name={PROXY}"})
        code, out = container.exec_run(list(cmd))
        assert code == 0 and isinstance(out, bytes), out  # not streamed: the whole output at once
        return str(out.decode())
    finally:
        engine.close()


def agent_status(lab: Lab, node: str) -> list[str]:
    """The first line of the agent's own status inside the proxy container, split: what it serves."""
    return proxy_exec(lab, node, "sh", "-c", STATUS).splitlines()[0].split()


def served(lab: Lab) -> dict[str, str]:
    """Per LB node, the digest its nginx serves (the agent's word, read inside the container)."""
    out = {}
    for node in lab.lb_nodes:
        fields = agent_status(lab, node)  # swarmgate/3 status TASK ok SERVED ... | error REJECTED SERVED ...
        out[node] = fields[4] if fields[3] == "ok" else fields[5]
    return out


def assert_unchanged(cluster: Cluster, before: dict[str, str]) -> None:
    assert served(cluster.lab) == before
    for node in cluster.lab.lb_nodes:
        resp = http.get(cluster.lab.address(node), "/ping", host="demo.local")
        assert resp.status == 200 and b"PWNED" not in resp.body, (node, resp.status, resp.body[:200])
        assert json.loads(resp.body)["metadata"] == "demo"


def attack(action: str, address: str, *args: str, netns: str | None = None,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    """`tests.lab.attacker` from the host, or from inside a node's network namespace."""
    cmd = [str(REPO / ".venv" / "bin" / "python"), "-m", "tests.lab.attacker", action, address, str(SSL_PORT), *args]
    if netns is not None:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def leaked_key(cluster: Cluster) -> tuple[ChannelKey, Path]:
    text = proxy_exec(cluster.lab, cluster.lab.lb_nodes[0], "cat", "/run/secrets/swarmgate-channel")
    path = cluster.workdir / "leaked.key"
    path.write_text(text)
    path.chmod(0o600)
    return ChannelKey.parse(text), path


def api_view(client: docker.DockerClient) -> tuple[str, list[str]]:
    """Everything a reader of the Swarm API sees, as text, and every label value in it."""
    api = client.api
    objects: dict[str, Any] = {
        "services": [docker_api.inspect_service(client, s["ID"]) for s in docker_api.services(client)],
        "tasks": docker_api.tasks(client),
        "nodes": api.nodes(),
        "configs": [docker_api.inspect_config(client, c["ID"]) for c in docker_api.configs(client)],
        "secrets": [api.inspect_secret(s["ID"]) for s in api.secrets()],
    }
    text = json.dumps(objects, sort_keys=True, default=str)
    # Config data is base64 in the API: a reader decodes it.
    text += "".join(base64.b64decode(c["Spec"].get("Data", "")).decode("utf-8", "replace")
                    for c in objects["configs"])
    labels = [v for kind in ("services", "configs", "secrets", "nodes") for o in objects[kind]
              for v in ((o.get("Spec") or {}).get("Labels") or {}).values()]
    return text, labels


def test_nothing_the_docker_api_shows_is_key_material_or_opens_the_control_server(cluster: Cluster) -> None:
    key, _ = leaked_key(cluster)
    text, labels = api_view(cluster.client)
    secret_parts = [key.hmac_key.hex()] + [line for line in key.key_pem.splitlines() if not line.startswith("-----")]
    for part in secret_parts:
        assert part not in text
    before = served(cluster.lab)
    lb = cluster.lab.address(cluster.lab.lb_nodes[0])
    # The swarmgate/2 attack: every label value (the token digest was one) as the bearer, on port 80.
    for value in sorted(set(labels)):
        result = attack("bearer", lb, value)
        assert result.get("status") not in (201, 204), (value, result)
    assert_unchanged(cluster, before)


@pytest.mark.parametrize("where", ["host", "worker"])
def test_forged_tls_pushes_are_refused_from_a_worker_and_from_the_host(cluster: Cluster, where: str) -> None:
    netns = None if where == "host" else f"sglab-{plain_worker(cluster.lab)}"
    before = served(cluster.lab)
    for node in cluster.lab.lb_nodes:
        address = cluster.lab.address(node)
        anonymous = attack("tls-anonymous", address, netns=netns)
        own_cert = attack("tls-own-cert", address, str(cluster.workdir), netns=netns)
        # nginx asks for a client certificate and checks it against the channel's: without it the
        # connection is closed with no answer (no status, no error page, no body read), whatever
        # certificate the client made for itself.
        for result in (anonymous, own_cert):
            assert "status" not in result and "RemoteDisconnected" in result.get("error", ""), result
    assert_unchanged(cluster, before)


def test_a_captured_push_is_tls_and_its_replay_alteration_and_reaiming_change_nothing(cluster: Cluster) -> None:
    lab = cluster.lab
    pcap = cluster.workdir / "push.pcap"
    with tcpdump(f"sglab-{lab.lb_nodes[0]}", "eth0", SSL_PORT, pcap):
        route_and_wait(lab, cluster.client, "extra", "extra.local")
    to_proxy = [s for s in streams(pcap) if s.dst[1] == SSL_PORT and s.dst[0] == lab.address(lab.lb_nodes[0])]
    pushes = [s for s in to_proxy if len(s.data) > 2000]  # a config is kilobytes; status reads are not
    assert pushes, f"no push captured among {len(to_proxy)} connections"
    everything = pcap.read_bytes()
    key, _ = leaked_key(cluster)
    # TLS records only (handshake 0x16, then application data): nothing of the config, the protocol or
    # the key is readable, though the new route's host name is in the config that was pushed.
    for stream in pushes:
        assert stream.data[:2] == b"\x16\x03", stream.data[:8].hex()
    for plain in (b"extra.local", b"swarmgate/3 config", b"server_name", b"Authorization", key.hmac_key.hex().encode()):
        assert plain not in everything, plain

    before = served(lab)
    push = pushes[-1].data
    altered = bytearray(push)
    for i in range(len(altered) // 2, len(altered) // 2 + 16):
        altered[i] ^= 0xFF
    for name, data, node in (("replayed", push, lab.lb_nodes[0]), ("altered", bytes(altered), lab.lb_nodes[0]),
                             ("re-aimed", push, lab.lb_nodes[1])):
        hex_file = cluster.workdir / f"{name}.hex"
        hex_file.write_text(data.hex())
        result = attack("raw", lab.address(node), str(hex_file), netns=f"sglab-{plain_worker(lab)}")
        answer = bytes.fromhex(result.get("answer_hex", ""))
        assert b"HTTP/1.1 20" not in answer and b"swarmgate/3" not in answer, (name, answer[:200])
    assert_unchanged(cluster, before)


def attack_with_leaked_key(cluster: Cluster, node: str, config: str, *, term: int, seq: int) -> dict[str, Any]:
    _, path = leaked_key(cluster)
    task = agent_status(cluster.lab, node)[2]
    return attack("push-with-key", cluster.lab.address(node), str(path),
                  env={"ATTACK_CONFIG": config, "ATTACK_TASK": task, "ATTACK_TERM": str(term),
                       "ATTACK_SEQ": str(seq)})


def test_with_a_leaked_key_a_stale_term_root_workers_or_a_missing_control_server_are_refused(
        cluster: Cluster) -> None:
    """The issue's lasting takeover needed root workers (to read /run/secrets) and a control server of
    its own (to fake the status). Even the key's holder gets neither, nor a push from an older term."""
    lab, node = cluster.lab, cluster.lab.lb_nodes[0]
    before = served(lab)
    live = proxy_exec(lab, node, "cat", "/etc/nginx/nginx.conf")
    fields = agent_status(lab, node)
    term, seq = int(fields[-2]), int(fields[-1])
    pwned_server = ('    server {\n        listen 80;\n        server_name demo.local;\n'
                    '        location /__loot/ { alias /run/secrets/; }\n        return 200 "PWNED\\n";\n    }\n')
    takeover = live.replace("http {\n", "http {\n" + pwned_server, 1)
    root_takeover = takeover.replace("user nginx;", "user root;", 1)
    without_control = live.replace("include /var/lib/swarmgate/control/*.conf;", "", 1)
    assert root_takeover != takeover and without_control != live
    stale = attack_with_leaked_key(cluster, node, takeover, term=max(term - 1, 0), seq=seq + 1)
    assert stale.get("status") in (201, 204), stale  # nginx stores the body; the agent refuses it
    # Each authentic push moves the fence by one, so the operator's next push still lands after these.
    attack_with_leaked_key(cluster, node, root_takeover, term=term, seq=seq + 1)
    wait_for(lambda: "error" in agent_status(lab, node), timeout=10, what="the agent to reject user root")
    assert "root" in proxy_exec(lab, node, "sh", "-c", STATUS)
    attack_with_leaked_key(cluster, node, without_control, term=term, seq=seq + 2)
    wait_for(lambda: "control" in proxy_exec(lab, node, "sh", "-c", STATUS), timeout=10,
             what="the agent to reject a config without its control server")
    assert_unchanged(cluster, before)
    # The operator is not locked out: a new route still reaches every LB node.
    route_and_wait(lab, cluster.client, "extra2", "extra2.local")
    digest = hashlib.sha256(live.encode()).hexdigest()
    assert digest == before[node]

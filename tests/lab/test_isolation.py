"""One service never stalls the others, on the lab.

Found on the lab: one service with `com.docker.lb.ssl_cert=no-such-secret` made the proxy service
un-updatable (Swarm refuses a spec naming a missing secret), so a rolling update of `demo` was never
routed: 502 on both LB nodes. Here the seed is deployed the seed's way (`scripts/demo.sh up`), the
bad service is created, `demo` is rolled, and every LB node must route demo.local to demo's new task.

Run it under the lab's lock: `flock /tmp/swarmgate-lab.lock .venv/bin/pytest tests/lab/test_isolation.py`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import partial

import docker
import docker.errors
import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from tests import docker_api
from tests.lab import http, shared_seed
from tests.lab.cluster import Lab
from tests.lab.operator_fixture import PROXY, create_routed, operator_endpoints, running_upstreams, wait_full_passes
from tests.lab.seed_deployment import Seed
from tests.support import event_window, wait_for

pytestmark = pytest.mark.lab

DEMO = "demo"
BAD = "tls-missing-secret"
BAD_LABELS = {"com.docker.lb.hosts": "bad-tls.local", "com.docker.lb.port": "8080",
              "com.docker.lb.ssl_cert": "no-such-secret", "com.docker.lb.ssl_key": "no-such-secret"}
OPERATOR = "interlock"  # the seed's operator service (scripts/demo.sh)
# Whole passes of the seed's operator that see the bad service before demo is rolled: more than one,
# so a pass that began before the service existed does not count and a second look must agree.
PASSES_WITH_BAD = 3


def remove_service(client: docker.DockerClient, name: str) -> None:
    for svc in client.services.list(filters={"name": name}):
        if svc.name == name:
            docker_api.remove(svc)


@pytest.fixture
def seed(lab: Lab) -> Iterator[docker.DockerClient]:
    """The seed deployed (scripts/demo.sh up, then converged: the proxy is not rolling any more), or the
    one a previous module kept at rest; kept for the next module once the bad service is gone."""
    assert len(lab.lb_nodes) >= 2, "the seed needs two load-balancer nodes"
    client = lab.manager_client()
    remove_service(client, BAD)
    deployment = Seed(lab, log=lambda msg: print(f"[isolation] {msg}", flush=True))
    shared_seed.acquire(deployment)
    try:
        yield client
    finally:
        try:
            remove_service(client, BAD)
            # `demo.sh down` must succeed: now, or once kept, when the conftest removes the deployment.
            shared_seed.keep(deployment, check_down=True)
        finally:
            client.close()


def routed_to(lab: Lab, node: str, upstreams: set[str]) -> bool:
    """Whether the LB node answers demo.local from one of `upstreams` (only them, over a few requests)."""
    seen = set()
    for _ in range(4):
        try:
            resp = http.get(lab.address(node), "/ping", host="demo.local", timeout=2)
        except OSError:
            return False
        if resp.status != 200:
            return False
        seen.add(resp.headers.get("x-upstream-addr", ""))
    return seen <= upstreams


@pytest.mark.shared_seed(keeps=True)
def test_a_service_naming_a_missing_secret_does_not_stall_a_rolling_update_of_another(
    lab: Lab, seed: docker.DockerClient
) -> None:
    client = seed
    before = running_upstreams(client, DEMO)
    for node in lab.lb_nodes:
        wait_for(partial(routed_to, lab, node, before), timeout=60, what=f"{node} to route demo.local")

    # The bad service next to demo: the operator looks at it for a counted number of whole passes (its
    # own count on /metrics, not a guess in seconds) and leaves the proxy service alone all along,
    # while demo keeps being routed where it was.
    operators = wait_for(lambda: operator_endpoints(client, (OPERATOR,)) or None, timeout=30,
                         what="the seed operator's running task")
    ((address, port),) = operators.values()
    with event_window(client, types=("service",)) as window:
        create_routed(client, BAD, BAD_LABELS)
        wait_full_passes(address, port, PASSES_WITH_BAD, timeout=60)
    assert window.writes_to(PROXY) == [], "the operator wrote its proxy service for a service it cannot route"
    for node in lab.lb_nodes:
        assert routed_to(lab, node, before), f"{node} stopped routing demo.local once the bad service was there"

    # Detached: the wait below for demo's rolled task is the proof; the CLI's 5-second watch adds nothing.
    subprocess.run(["docker", "service", "update", "--force", "--detach", DEMO], env=lab.env,
                   capture_output=True, text=True, timeout=300, check=True)
    after = wait_for(lambda: (lambda ups: ups if ups and not ups & before else None)(running_upstreams(client, DEMO)),
                     timeout=120, what="demo's rolled task to run")
    for node in lab.lb_nodes:
        wait_for(partial(routed_to, lab, node, after), timeout=30,
                 what=f"{node} to route demo.local to the rolled task {sorted(after)}")

    # The proxy's spec never named the missing secret, and the bad host is simply not routed.
    secrets = docker_api.inspect_service(client, PROXY)["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets") or []
    assert "no-such-secret" not in {s.get("SecretName") for s in secrets}
    for node in lab.lb_nodes:
        assert http.get(lab.address(node), "/ping", host="bad-tls.local", timeout=2).status == 503


PROBE = "sg-isolation-probe"
PROBE_SECRET = "sg-isolation.pem"
GOOD_TLS = "sg-isolation-good"


def probe_with_secrets(client: docker.DockerClient, refs: list[dict[str, object]]) -> None:
    """A service that mounts `refs` the way the proxy mounts TLS secrets (no task ever runs)."""
    docker_api.create_service(client,
        task_template={"ContainerSpec": {"Image": "swarmgate/demo:lab", "Secrets": refs}},
        name=PROBE, mode={"Replicated": {"Replicas": 0}})


def test_swarm_refuses_a_spec_naming_a_missing_secret_and_the_route_table_never_names_one(lab: Lab) -> None:
    client = lab.manager_client()
    made: list[str] = []
    try:
        for name in (PROBE, GOOD_TLS, BAD):
            remove_service(client, name)
        secret = client.secrets.create(name=PROBE_SECRET, data=b"not really a certificate")
        for name, labels in ((GOOD_TLS, {"com.docker.lb.hosts": "good-tls.local", "com.docker.lb.port": "8080",
                                         "com.docker.lb.ssl_cert": PROBE_SECRET,
                                         "com.docker.lb.ssl_key": PROBE_SECRET}),
                             (BAD, BAD_LABELS)):
            create_routed(client, name, labels, replicas=0)
            made.append(name)

        # The route table of the real Swarm's documents mounts only the secret that exists.
        observed = ObservedState.from_api(services=docker_api.services(client), tasks=docker_api.tasks(client),
                                          nodes=client.api.nodes(), secrets=client.api.secrets())
        table = build_route_table(observed, Extension(name="default", publish_mode="host"))
        assert table.secrets == (PROBE_SECRET,)
        assert [(s.service, s.kind) for s in table.set_aside if s.service in made] == [(BAD, "missing_secret")]

        # What Swarm does with a spec that names the missing one: refuses it whole.
        def ref(name: str, secret_id: str) -> dict[str, object]:
            return {"File": {"Name": f"/run/secrets/{name}", "UID": "0", "GID": "0", "Mode": 0o400},
                    "SecretName": name, "SecretID": secret_id}

        assert secret.id is not None
        with pytest.raises(docker.errors.APIError, match="not found"):
            probe_with_secrets(client, [ref(PROBE_SECRET, secret.id), ref("no-such-secret", "no-such-secret")])
        probe_with_secrets(client, [ref(PROBE_SECRET, secret.id)])
    finally:
        for name in (PROBE, *made):
            remove_service(client, name)
        wait_for(lambda: not client.services.list(filters={"name": PROBE}), timeout=30, what="probe removed")
        for found in client.secrets.list(filters={"name": PROBE_SECRET}):
            wait_for(found.remove, timeout=30, what=f"{PROBE_SECRET} removed")
        client.close()

"""Per-route policies on the seed deployment, through both LB nodes, with real clients.

One seed deployment (`scripts/demo.sh up`) and seven services of the demo image, created at once:

* `policy-auth`: basic auth from a Swarm secret (an htpasswd file the certificate courier brings),
  a 1 KiB body limit and a response header;
* `policy-limits`: 5 requests per second per client address, burst 5;
* `policy-deny`: denies the test client's own address (the lab bridge's host side);
* `policy-down`: no task, and its own 503 page from a Swarm config;
* `policy-stable` (weight 90) and `policy-minor` (weight 10) share `split.policy.local`, where
  `policy-beta` is a header canary (`X-Canary: beta`).

Requests go only to the lab's LB nodes, after checking the kernel routes them through the lab bridge.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.client
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import docker
import pytest
from docker.models.configs import Config
from docker.models.secrets import Secret

from tests import docker_api
from tests.lab import http as lab_http
from tests.lab import shared_seed
from tests.lab.cluster import Lab
from tests.lab.seed_deployment import Seed
from tests.support import wait_for

# It deploys the seed afresh and removes it, at its own place in the suite (see test_parity.py).
pytestmark = pytest.mark.lab

AUTH, LIMITS, DENY = "auth.policy.local", "limits.policy.local", "deny.policy.local"
DOWN, SPLIT = "down.policy.local", "split.policy.local"
CLIENT = "198.18.0.1"  # the lab bridge's host side: where these requests come from
USER, PASSWORD = "alice", "wonderland"
PAGE = "<html><body><h1>policy-down is resting</h1></body></html>\n"
SPLIT_REQUESTS = 1000


def request(address: str, host: str, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, conn: http.client.HTTPConnection | None = None,
            ) -> tuple[int, dict[str, str], str]:
    """One request to an LB node (a fresh connection unless `conn` is given)."""
    lab_http.assert_lab_route(address)
    own = conn is None
    c = conn or http.client.HTTPConnection(address, 80, timeout=5)
    try:
        c.request(method, "/ping", body=body, headers={"Host": host, **(headers or {})})
        resp = c.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode(errors="replace")
    finally:
        if own:
            c.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _remove_policy_objects(client: docker.DockerClient) -> None:
    for svc in client.services.list():
        if (svc.name or "").startswith("policy-"):
            docker_api.remove(svc)
    objects: list[Secret | Config] = [*client.secrets.list(), *client.configs.list()]
    for obj in objects:
        if (obj.name or "").startswith("policy-"):
            with contextlib.suppress(TimeoutError):
                wait_for(functools.partial(_removed, obj), timeout=60, what=f"{obj.name} removed")


def _removed(obj: Secret | Config) -> bool:
    with contextlib.suppress(docker.errors.NotFound):
        obj.remove()
    return True


@pytest.fixture(scope="module")
def seed(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    assert len(lab.lb_nodes) >= 2, "the seed needs two load-balancer nodes"
    s = Seed(lab, log=lambda msg: print(f"[policies] {msg}", flush=True))
    shared_seed.acquire(s)
    _remove_policy_objects(s.client())  # what an interrupted run left
    tmp = tmp_path_factory.mktemp("policies")
    hashed = subprocess.run(["openssl", "passwd", "-apr1", PASSWORD], capture_output=True, text=True,
                            check=True, timeout=30).stdout.strip()
    (tmp / "users.htpasswd").write_text(f"{USER}:{hashed}\n")
    (tmp / "sorry.html").write_text(PAGE)
    s.cli("secret", "create", "policy-users.htpasswd", str(tmp / "users.htpasswd"))
    s.cli("config", "create", "--label", "swarmgate.error-page=true", "policy-sorry.html", str(tmp / "sorry.html"))
    for name, host, labels, replicas in (
        ("policy-auth", AUTH, {"auth_secret": "policy-users.htpasswd", "max_body_size": "1k",
                               "response_header.X-Robots-Tag": "noindex"}, 1),
        ("policy-limits", LIMITS, {"rate_limit": "5r/s", "rate_burst": "5"}, 1),
        ("policy-deny", DENY, {"deny": CLIENT}, 1),
        ("policy-down", DOWN, {"error_page_503": "policy-sorry.html"}, 0),
        ("policy-stable", SPLIT, {"weight": "90"}, 1),
        ("policy-minor", SPLIT, {"weight": "10"}, 1),
        ("policy-beta", SPLIT, {"canary": "header:X-Canary=beta"}, 1),
    ):
        args = ["service", "create", "--detach", "--no-resolve-image", "--name", name, "--replicas", str(replicas),
                "--publish", "mode=host,target=8080", "--env", f"METADATA={name}",
                "--label", f"com.docker.lb.hosts={host}", "--label", "com.docker.lb.port=8080"]
        for key, value in labels.items():
            args += ["--label", f"swarmgate.{key}={value}"]
        s.cli(*args, "swarmgate/demo:lab")
    try:
        yield s
    finally:
        # The courier mounts the htpasswd secret: the deployment goes first, then it can.
        s.undeploy()
        _remove_policy_objects(s.client())
        s.close()


def _ready(seed: Seed) -> dict[str, dict[str, int | str]]:
    """What each LB node answers for each policy's host (a route not there yet is a plain 503)."""
    out: dict[str, dict[str, int | str]] = {}
    for node in seed.lab.lb_nodes:
        address = seed.lab.address(node)
        seen: dict[str, int | str] = {}
        for host, headers in ((AUTH, basic(USER, PASSWORD)), (DENY, {}), (DOWN, {}), (SPLIT, {}),
                              (SPLIT, {"X-Canary": "beta"})):
            try:
                status, _, body = request(address, host, headers=headers)
                seen[f"{host}{' canary' if headers.get('X-Canary') else ''}"] = \
                    status if host != DOWN or "resting" in body else f"{status} (not the custom page)"
            except OSError as exc:
                seen[host] = str(exc)[-60:]
        out[node] = seen
    return out


def test_every_policy_through_both_lb_nodes(seed: Seed) -> None:
    want = {AUTH: 200, DENY: 403, DOWN: 503, SPLIT: 200, f"{SPLIT} canary": 200}
    last: list[object] = []

    def ready() -> bool:
        seen = _ready(seed)
        last[:] = [seen]
        # The limited host is not polled (that would spend its burst), and a route answered once may
        # still meet an old worker of the last reload for 100 ms: the agents say when every route is
        # live on new workers only (in two CI runs lb-00 answered all 30 limited requests with 503).
        return all(answers == want for answers in seen.values()) and all(
            seed.agent_serves_host(node, AUTH, DENY, DOWN, SPLIT, LIMITS) for node in seed.lab.lb_nodes)

    t0 = time.monotonic()
    wait_for(ready, timeout=180, interval=0.5, what=lambda: f"every policy route on every LB node: {last}")
    seed.log(f"every policy route answered on every LB node {time.monotonic() - t0:.1f} s after the services "
             "were created")
    shares: Counter[str] = Counter()
    for node in seed.lab.lb_nodes:
        address = seed.lab.address(node)
        # Basic auth: 401 without a password or with a wrong one, 200 with it (the courier's file).
        status, headers, _ = request(address, AUTH)
        assert status == 401 and headers.get("www-authenticate") == 'Basic realm="restricted"', (node, status)
        assert request(address, AUTH, headers=basic(USER, "wrong"))[0] == 401, node
        status, headers, body = request(address, AUTH, headers=basic(USER, PASSWORD))
        assert status == 200 and '"metadata":"policy-auth"' in body and headers["x-robots-tag"] == "noindex", node
        # The body limit: 413 past 1 KiB, before the request reaches the task.
        assert request(address, AUTH, method="POST", body=b"x" * 2048, headers=basic(USER, PASSWORD))[0] == 413, node
        # A denied client address.
        assert request(address, DENY)[0] == 403, node
        # The rate: 5/s with a burst of 5; 30 requests at once get 429s, and at least 5 pass.
        statuses = Counter(request(address, LIMITS)[0] for _ in range(30))
        assert statuses[429] > 0 and statuses[200] >= 5 and set(statuses) <= {200, 429}, (node, statuses)
        # The custom 503 page of a service without tasks.
        status, headers, body = request(address, DOWN)
        assert status == 503 and body == PAGE and headers["content-type"].startswith("text/html"), (node, status)
        # The header canary takes every request that carries its header, and only those.
        assert all('"metadata":"policy-beta"' in request(address, SPLIT, headers={"X-Canary": "beta"})[2]
                   for _ in range(20)), node
        # The weighted split, over one keep-alive connection per node.
        conn = http.client.HTTPConnection(address, 80, timeout=5)
        try:
            for _ in range(SPLIT_REQUESTS // len(seed.lab.lb_nodes)):
                body = request(address, SPLIT, conn=conn)[2]
                shares[body.split('"metadata":"', 1)[1].split('"', 1)[0]] += 1
        finally:
            conn.close()
    seed.log(f"weighted split over {SPLIT_REQUESTS} requests: {dict(shares)}")
    assert sum(shares.values()) == SPLIT_REQUESTS and set(shares) == {"policy-stable", "policy-minor"}, shares
    assert 0.85 <= shares["policy-stable"] / SPLIT_REQUESTS <= 0.95, shares
    # Every other route still answers: the seed's demo.
    assert all(seed.answers(node, "demo.local") for node in seed.lab.lb_nodes)

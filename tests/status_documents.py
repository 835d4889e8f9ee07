"""`/v1/status` documents built the way the operator builds them, for the status page's tests and
benchmark: a snapshot of Engine-API JSON (tests.factories) → `decide_pass` → the same functions the
operator's `status()` joins (the proxies' store, the findings, the route rows, the leader, and this
operator's own state as `Operator.status` adds it).

The seed-like Swarm: two LB nodes, `demo` routed, `shop` set aside (a port label that is not a
number) asking for shop.example.com, `secure` with a certificate secret, `idle` routed with no running
task, a misspelt label (a notice). `extra` adds that many routed services `app-N` for size.
"""

from __future__ import annotations

from typing import Any

from swarmgate.models.settings.config import parse_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.status import status_document, with_traffic
from swarmgate.operator.delivery.traffic_ledger import RouteTraffic
from swarmgate.operator.planning.decide import decide_pass
from swarmgate.operator.planning.findings import route_findings
from swarmgate.operator.planning.leadership import leader_summary, standbys
from swarmgate.operator.planning.route_rows import route_rows
from tests import factories as f

TOML = """
ListenAddr = ":8080"
[Extensions.default]
  ProxyImage = "swarmgate/nginx:lab"
  PublishMode = "host"
  Image = "interlockpreview/interlock-extension-nginx:2.0.0-preview"
"""
# Planted where only a leak would carry it to the page: a service's environment, a label that is not
# a routing label, and the invalid part of a hosts label.
PLANTED = "s3cr3t-t0ken-d0-not-show"
NOW = 1_796_644_800.0  # 2026-12-07 12:00:00 UTC
TRAFFIC = {("default", "demo.local", "/"): RouteTraffic(42.5, 0.0125, 0.0875)}


def observed_state(extra: int = 0) -> ObservedState:
    nodes = [f.node("mgr-0", "198.18.0.10", role="manager"), f.node("wrk-0", "198.18.0.20"),
             f.node("lb-00", "198.18.0.30", labels={"nodetype": "loadbalancer"}),
             f.node("lb-01", "198.18.0.31", labels={"nodetype": "loadbalancer"})]
    demo = f.service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080",
                              "com.docker.lb.hots": "x", "team.token": PLANTED}, env=[f"TOKEN={PLANTED}"])
    shop = f.service("shop", {"com.docker.lb.hosts": "shop.example.com",
                              "com.docker.lb.port": "http"})
    secure = f.service("secure", {"com.docker.lb.hosts": "secure.local", "com.docker.lb.port": "8080",
                                  "com.docker.lb.ssl_cert": "secure.crt", "com.docker.lb.ssl_key": "secure.key"})
    idle = f.service("idle", {"com.docker.lb.hosts": "idle.local", "com.docker.lb.port": "8080"}, replicas=0)
    services = [demo, shop, secure, idle]
    tasks = [f.task(demo, "wrk-0", ports={8080: 30001}), f.task(secure, "wrk-0", ports={8080: 30002})]
    for i in range(extra):
        app = f.service(f"app-{i}", {"com.docker.lb.hosts": f"app-{i}.example.test", "com.docker.lb.port": "8080"})
        services.append(app)
        tasks.append(f.task(app, "wrk-0", ports={8080: 31000 + i % 20000}))
    return ObservedState.from_api(services=services, tasks=tasks, nodes=nodes,
                                  secrets=[f.swarm_secret("secure.crt"), f.swarm_secret("secure.key")])


def proxies(digest: str, *, rejected: str = "") -> ProxyState:
    """Two proxy tasks, one per LB node, both serving `digest`; with `rejected`, lb-01's nginx refused it."""
    store = ProxyState(clock=lambda: NOW)
    store.publish("default", "config text", digest)
    store.record_status(cluster="default", task="proxytask00000000000000001", node="lb-00", hostname="lb-00",
                        serving=digest, pushed=True)
    store.record_status(cluster="default", task="proxytask00000000000000002", node="lb-01", hostname="lb-01",
                        serving=digest, pushed=True, rejected=rejected,
                        message="nginx: [emerg] unknown directive \"bogus\" in /etc/nginx/nginx.conf:12" if rejected
                        else "")
    return store


def status(extra: int = 0, *, role: str = "leader", docker_reachable: bool = True,
           rejected: str = "") -> dict[str, Any]:
    """A whole `/v1/status` document, as `Operator.status` serves it."""
    config = parse_config(TOML, source="test.toml")
    observed = observed_state(extra)
    desired = decide_pass(config, observed).desired
    digest = desired.extension("default").rendered.digest
    leading = role == "leader"
    operator: dict[str, Any] = {
        "role": role, "identity": "operator-0", "holder": "operator-0" if leading else "operator-1",
        "reason": "holds the lease" if leading else "the lease is held by operator-1",
        "ready": docker_reachable, "docker_reachable": docker_reachable,
        "last_pass": "2026-12-07T12:00:00+00:00", "holds": []}
    return {**status_document(proxies(digest, rejected=rejected)), **route_findings(desired, observed),
            # The leader's proxies measured an interval: demo.local had requests, some failing; the
            # other routes none. A standby reads no traffic.
            "routes": with_traffic(route_rows(desired), TRAFFIC if leading else {}, {"default"} if leading else set()),
            "leader": {**leader_summary(observed), "standbys": standbys(observed, None)},
            "operator": operator}

"""Interlock's "service clusters" on the lab: two extensions, each with its own proxy on its own LB node.

As Interlock's documentation sets them up: the LB nodes get a `region` label, each extension has a
`ServiceCluster`, its own `ProxyServiceName` and `ProxyConstraints` on its region (host mode, the same
ports on both, since the nodes differ), and a service picks its cluster with
`com.docker.lb.service_cluster`. One operator (a host process over a clean Swarm) runs both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import docker
import pytest

from tests import docker_api
from tests.lab import http
from tests.lab.cluster import Lab
from tests.lab.operator_fixture import RunningOperator, clean_swarm, create_routed, running_upstreams
from tests.support import wait_for

pytestmark = pytest.mark.lab

CLUSTERS = ("us-east", "us-west")
PROXIES = tuple(f"sgc-proxy-{c}" for c in CLUSTERS)
SERVICES = tuple(f"sgc-{c}" for c in CLUSTERS)
# Both proxies publish the same ports, each on its own node; not the seed's 80/443, so a seed
# deployment left on the lab could not collide with them.
PORT, SSL_PORT = 8180, 8543


def _extension(cluster: str) -> str:
    return f"""
  [Extensions.{cluster}]
    ProxyImage = "swarmgate/nginx:lab"
    ProxyServiceName = "sgc-proxy-{cluster}"
    ProxyConfigPath = "/etc/nginx/nginx.conf"
    ProxyReplicas = 1
    ProxyConstraints = ["node.labels.nodetype==loadbalancer", "node.labels.region=={cluster}"]
    ServiceCluster = "{cluster}"
    PublishMode = "host"
    PublishedPort = {PORT}
    TargetPort = 80
    PublishedSSLPort = {SSL_PORT}
    TargetSSLPort = 443
"""


def _label_regions(client: docker.DockerClient, regions: dict[str, str | None]) -> None:
    """Set (or with None remove) the `region` label of each named node."""
    for node in client.nodes.list():
        hostname = node.attrs["Description"]["Hostname"]
        if hostname not in regions:
            continue
        spec = dict(node.attrs["Spec"])
        labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k != "region"}
        region = regions[hostname]
        if region is not None:
            labels["region"] = region
        node.update({**spec, "Labels": labels})


@pytest.fixture
def clusters(lab: Lab, tmp_path: Path) -> Iterator[tuple[RunningOperator, dict[str, str]]]:
    """The operator running both extensions; cluster name -> the LB node its proxy is pinned to."""
    if len(lab.lb_nodes) < 2:
        pytest.skip("needs two LB nodes")
    nodes = dict(zip(CLUSTERS, lab.lb_nodes, strict=False))
    client = lab.manager_client()
    clean_swarm(client, services=SERVICES, proxies=PROXIES, lab=lab)
    _label_regions(client, {node: cluster for cluster, node in nodes.items()})
    op = RunningOperator(lab, tmp_path)
    # The operator runs on the lab's host, which is not a Swarm node: the proxies must let it in.
    op.config_path.write_text(f'ListenAddr = "{op.listen}"\nDockerURL = "{lab.node(lab.managers[0]).sock}"\n'
                              f'ControlSources = ["{lab.host_addr}"]\n'
                              'PollInterval = "1s"\n\n[Extensions]' + "".join(map(_extension, CLUSTERS)))
    try:
        op.start()
        yield op, nodes
    except BaseException:
        print(f"--- operator log (last lines) ---\n{op.log_tail(80)}")
        raise
    finally:
        op.stop()
        clean_swarm(client, services=SERVICES, proxies=PROXIES, lab=lab)
        _label_regions(client, dict.fromkeys(nodes.values()))
        client.close()


def _proxy_container(client: docker.DockerClient, proxy: str) -> tuple[str, str] | None:
    """(node hostname, container ID) of the proxy service's one running task."""
    hostnames = {n["ID"]: n["Description"]["Hostname"] for n in client.api.nodes()}
    running = [t for t in docker_api.tasks(client, filters={"service": proxy, "desired-state": "running"})
               if t["Status"]["State"] == "running"]
    if len(running) != 1:
        return None
    task = running[0]
    return hostnames[task["NodeID"]], task["Status"]["ContainerStatus"]["ContainerID"]


def test_each_service_cluster_is_served_by_its_own_proxy_on_its_own_lb_node_only(
        lab: Lab, client: docker.DockerClient, clusters: tuple[RunningOperator, dict[str, str]]) -> None:
    op, nodes = clusters
    for cluster in CLUSTERS:
        create_routed(client, f"sgc-{cluster}", {"com.docker.lb.hosts": f"{cluster}.sgc.local",
                                                 "com.docker.lb.port": "8080",
                                                 "com.docker.lb.service_cluster": cluster})
    upstreams = {c: wait_for(partial(running_upstreams, client, f"sgc-{c}"), timeout=30,
                             what=f"a running sgc-{c} task") for c in CLUSTERS}

    def statuses() -> dict[tuple[str, str], http.Response]:
        """(host's cluster, node's cluster) -> the answer of that node to that host."""
        return {(host, where): http.get(lab.address(node), "/ping", port=PORT, host=f"{host}.sgc.local", timeout=2)
                for host in CLUSTERS for where, node in nodes.items()}

    def separated() -> dict[tuple[str, str], http.Response] | None:
        answers = statuses()
        ok = all(r.status == (200 if host == where else 503) for (host, where), r in answers.items())
        return answers if ok else None

    answers = wait_for(separated, timeout=45, what=lambda: "each host 200 on its own cluster's node and 503 on the "
                       f"other's: {({k: r.status for k, r in statuses().items()})}")
    # Each extension has its own proxy service, its one task on its own region's LB node.
    proxies = {c: wait_for(partial(_proxy_container, client, f"sgc-proxy-{c}"), timeout=10,
                           what=f"sgc-proxy-{c}'s task") for c in CLUSTERS}
    assert {c: where for c, (where, _) in proxies.items()} == nodes
    for (host, where), r in answers.items():
        # Who answered: the proxy of the node's own cluster (nginx's $hostname is its container's).
        assert r.headers["x-proxy-id"] == proxies[where][1][:12], (host, where, r.headers)
        if host == where:
            assert r.headers["x-upstream-addr"] in upstreams[host], (host, r.headers)
            assert json.loads(r.body)["metadata"] == f"sgc-{host}"
    # The operator reports both extensions, each with its own proxy serving its current config.
    def reported() -> bool:
        status = op.status()["clusters"]
        return set(status) == set(CLUSTERS) and all(
            status[c]["all_current"] and [p["hostname"] for p in status[c]["proxies"]] == [nodes[c]] for c in CLUSTERS)

    wait_for(reported, timeout=15, what=lambda: f"both extensions current, one proxy each: {json.dumps(op.status())}")

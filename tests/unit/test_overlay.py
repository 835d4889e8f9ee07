"""Overlay networks, Interlock's default: which way a service is reached, and what the proxy joins."""

from __future__ import annotations

from typing import Any

import pytest

from swarmgate.models.routing.labels import SetAside
from swarmgate.models.routing.routes import HostRoute, PathRoute, RouteTable, Upstream, build_route_table, pool_name
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.services import VirtualIP
from swarmgate.models.swarm.tasks import NetworkAttachment
from swarmgate.operator.planning.proxyspec import build_proxy_spec, proxy_networks
from tests.factories import node, overlay_network, service, task

HOST = Extension(name="default", publish_mode="host")
NODES = [node("wrk-0", "198.18.0.16"), node("wrk-1", "198.18.0.17")]
FRONT, BACK = overlay_network("front"), overlay_network("back")
INGRESS = overlay_network("ingress", ingress=True)
LOCAL = overlay_network("bridge", driver="bridge", scope="local")
F, B = FRONT["Id"], BACK["Id"]


def lb(hosts: str, **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080",
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


def state(*items: dict[str, Any]) -> ObservedState:
    return ObservedState.from_api(services=[i for i in items if "TaskTemplate" in i["Spec"]],
                                  tasks=[i for i in items if "ServiceID" in i], nodes=NODES,
                                  networks=[FRONT, BACK, INGRESS, LOCAL])


def one(host: str, svc: dict[str, Any], *upstreams: Upstream) -> HostRoute:
    return HostRoute(host, (PathRoute(path="/", pool=pool_name(host, "/"), services=(svc["Spec"]["Name"],),
                                      upstreams=tuple(upstreams)),))


def at(svc: dict[str, Any], t: dict[str, Any], address: str, port: int = 8080, *, overlay: bool = True) -> Upstream:
    return Upstream(address=address, port=port, task_id=t["ID"], node_id=t["NodeID"], service=svc["Spec"]["Name"],
                    overlay=overlay)


def scenarios() -> list[Any]:
    out = []
    web = service("web", lb("web.local"), host_ports=(), networks={F: "198.19.1.2"})
    w0 = task(web, "wrk-0", slot=1, addresses={F: "198.19.1.3"})
    w1 = task(web, "wrk-1", slot=2, addresses={F: "198.19.1.4"})
    starting = task(web, "wrk-1", slot=3, state="starting", addresses={F: "198.19.1.5"})
    out.append(pytest.param(
        state(web, w0, w1, starting),
        RouteTable(cluster="", networks=(F,), hosts=(one("web.local", web, at(web, w0, "198.19.1.3"),
                                                          at(web, w1, "198.19.1.4")),)),
        id="only-network-task-mode-routes-to-each-running-task-address"))

    draining = task(web, "wrk-0", slot=4, desired="shutdown", addresses={F: "198.19.1.6"})
    out.append(pytest.param(
        state(web, w0, draining),
        RouteTable(cluster="", networks=(F,), hosts=(one("web.local", web, at(web, w0, "198.19.1.3")),)),
        id="a-task-swarm-is-stopping-is-left-out-while-another-runs"))
    out.append(pytest.param(
        state(web, draining, starting),
        RouteTable(cluster="", networks=(F,), hosts=(one("web.local", web, at(web, draining, "198.19.1.6")),)),
        id="a-task-swarm-is-stopping-stays-while-no-other-runs"))

    vip = service("api", lb("api.local", backend_mode="vip"), host_ports=(), networks={F: "198.19.1.9"})
    v0 = task(vip, "wrk-0", addresses={F: "198.19.1.10"})
    out.append(pytest.param(
        state(vip, v0),
        RouteTable(cluster="", networks=(F,), hosts=(one("api.local", vip, Upstream(
            address="198.19.1.9", port=8080, task_id="vip", node_id="", service="api")),)),
        id="vip-mode-routes-to-the-service-vip-on-the-network"))

    default = service("dflt", lb("d.local", backend_mode="default"), host_ports=(), networks={F: "198.19.1.20"})
    d0 = task(default, "wrk-0", addresses={F: "198.19.1.21"})
    out.append(pytest.param(
        state(default, d0),
        RouteTable(cluster="", networks=(F,), hosts=(one("d.local", default, at(default, d0, "198.19.1.21")),)),
        id="backend-mode-default-is-task-mode"))

    two = service("two", lb("two.local", network="back"), host_ports=(), networks={F: "198.19.1.30", B: "198.19.2.30"})
    t0 = task(two, "wrk-0", addresses={F: "198.19.1.31", B: "198.19.2.31"})
    out.append(pytest.param(
        state(two, t0),
        RouteTable(cluster="", networks=(B,), hosts=(one("two.local", two, at(two, t0, "198.19.2.31")),)),
        id="network-label-picks-one-of-several"))

    both = service("both", lb("both.local"), host_ports=(8080,), networks={F: "198.19.1.40"})
    b0 = task(both, "wrk-0", ports={8080: 30040}, addresses={F: "198.19.1.41"})
    out.append(pytest.param(
        state(both, b0),
        RouteTable(cluster="", hosts=(one("both.local", both, at(both, b0, "198.18.0.16", 30040, overlay=False)),)),
        id="host-mode-port-and-no-network-label-stays-host-mode"))

    ambiguous = service("amb", lb("amb.local"), host_ports=(), networks={F: "198.19.1.50", B: "198.19.2.50"})
    wrong = service("wrong", lb("wrong.local", network="back"), host_ports=(), networks={F: "198.19.1.60"})
    unknown = service("unknown", lb("unknown.local", network="nope"), host_ports=(), networks={F: "198.19.1.70"})
    nowhere = service("nowhere", lb("nowhere.local", backend_mode="vip"), host_ports=())
    out.append(pytest.param(
        state(ambiguous, wrong, unknown, nowhere),
        RouteTable(cluster="", set_aside=(
            SetAside("amb", "is on several overlay networks (back, front): say which in com.docker.lb.network",
                     kind="network"),
            SetAside("nowhere", "label com.docker.lb.backend_mode=vip needs the service on an overlay network "
                                "(add --network NET)", kind="vip_backend"),
            SetAside("unknown", "label com.docker.lb.network: no overlay network named 'nope'", kind="network"),
            SetAside("wrong", "label com.docker.lb.network names back, which the service is not on "
                              "(add --network back)", kind="network"),
        )),
        id="a-network-that-cannot-be-chosen-sets-only-that-service-aside"))
    return out


@pytest.mark.parametrize(("observed", "expected"), scenarios())
def test_overlay_route_table(observed: ObservedState, expected: RouteTable) -> None:
    assert build_route_table(observed, HOST) == expected


def test_task_and_service_network_accessors_read_the_engine_json() -> None:
    web = service("web", lb("web.local"), host_ports=(), networks={F: "198.19.1.2"})
    observed = state(web, task(web, "wrk-0", addresses={F: "198.19.1.3"}))
    (svc,), (t,) = observed.services, observed.tasks
    assert svc.networks == (F,)
    assert svc.virtual_ips == (VirtualIP(network_id=F, address="198.19.1.2"),)
    assert t.networks == (NetworkAttachment(network_id=F, network_name=f"net-{F[:6]}", addresses=("198.19.1.3",)),)
    assert t.addresses_on(F) == ("198.19.1.3",) and t.addresses_on(B) == ()
    assert observed.network("front") == observed.network(F) and observed.network(F) is not None
    assert observed.network("ingress") is not None and not observed.network("ingress").joinable  # type: ignore[union-attr]
    assert observed.network("bridge") is not None and not observed.network("bridge").joinable  # type: ignore[union-attr]


@pytest.mark.parametrize(("needed", "current", "expected"), [
    pytest.param((F,), (), (F,), id="join-what-routes-need"),
    pytest.param((F,), (F,), (F,), id="a-route-on-a-joined-network-changes-nothing"),
    pytest.param((), (F,), (F,), id="a-network-whose-last-route-went-stays-joined"),
    pytest.param((B,), (F,), tuple(sorted((B, F))), id="a-new-network-is-added-to-the-joined-ones"),
])
def test_proxy_networks(needed: tuple[str, ...], current: tuple[str, ...], expected: tuple[str, ...]) -> None:
    assert proxy_networks(needed, current) == expected


def test_proxy_spec_lists_networks_only_when_it_joins_some() -> None:
    kwargs: dict[str, Any] = {"agent_config": None, "bootstrap_config": None, "proxy_config": "c",
                              "channel_secret": None}
    assert "Networks" not in build_proxy_spec(HOST, **kwargs)["TaskTemplate"]
    spec = build_proxy_spec(HOST, networks=(F, B, F), **kwargs)
    assert spec["TaskTemplate"]["Networks"] == [{"Target": n} for n in sorted((B, F))]

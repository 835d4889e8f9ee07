"""Observed Swarm (Engine API JSON) → whole route tables, table-driven."""

from __future__ import annotations

import random
from typing import Any

import pytest

from swarmgate.models.routing.keepalive import pool_idle_timeout, shortest_idle
from swarmgate.models.routing.labels import SetAside
from swarmgate.models.routing.routes import (
    HostRoute,
    PassthroughRoute,
    PathRoute,
    RouteTable,
    TLSFiles,
    Upstream,
    build_route_table,
    pool_name,
    unclaimed_services,
)
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from tests.factories import node, service, swarm_secret, task

HOST = Extension(name="default", publish_mode="host")
NODES = [node("wrk-0", "10.0.0.10"), node("wrk-1", "10.0.0.11"), node("wrk-2", "10.0.0.12")]
OLD, NEW = "2026-01-01T00:00:00.5Z", "2026-06-01T00:00:00Z"


def lb(hosts: str = "demo.local", port: str = "8080", **more: str) -> dict[str, str]:
    return {"com.docker.lb.hosts": hosts, "com.docker.lb.port": port,
            **{f"com.docker.lb.{k}": v for k, v in more.items()}}


def state(*items: dict[str, Any], nodes: list[dict[str, Any]] | None = None) -> ObservedState:
    """A snapshot of services, their tasks and secrets (`swarm_secret`), told apart by their shape."""
    services = [i for i in items if "TaskTemplate" in i["Spec"]]
    tasks = [i for i in items if "ServiceID" in i]
    secrets = [i for i in items if "ServiceID" not in i and "TaskTemplate" not in i["Spec"]]
    return ObservedState.from_api(services=services, tasks=tasks, nodes=NODES if nodes is None else nodes,
                                  secrets=secrets)


def secrets(*names: str) -> list[dict[str, Any]]:
    return [swarm_secret(name) for name in names]


def up(svc: dict[str, Any], t: dict[str, Any], address: str, port: int) -> Upstream:
    return Upstream(address=address, port=port, task_id=t["ID"], node_id=t["NodeID"], service=svc["Spec"]["Name"])


def route(host: str, path: str, services: tuple[str, ...], upstreams: tuple[Upstream, ...], **kw: Any) -> PathRoute:
    return PathRoute(path=path, pool=pool_name(host, path), services=services, upstreams=upstreams, **kw)


demo = service("demo", lb(), created_at=OLD)
t0 = task(demo, "wrk-0", slot=1, ports={8080: 30000})
t1 = task(demo, "wrk-1", slot=2, ports={8080: 30001})
canary = service("demo-canary", lb(), created_at=NEW)
c0 = task(canary, "wrk-2", ports={8080: 30002})


def scenarios() -> list[Any]:
    out = []

    out.append(pytest.param(
        state(demo, t0, t1),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (
            route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000), up(demo, t1, "10.0.0.11", 30001))),
        )),)),
        id="seed-demo-two-tasks-each-node-address-and-high-port",
    ))

    # Docker bound t1's 8080 on IPv4 at 30001 but on IPv6 at 30000 (IPv4's 30000 was taken on that
    # node): the route names the IPv4 one, never the twin's port on the IPv4 address.
    twin = task(demo, "wrk-1", slot=2, ports={8080: 30001}, ipv6_ports={8080: 30000})
    out.append(pytest.param(
        state(demo, t0, twin),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (
            route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000),
                                                 up(demo, twin, "10.0.0.11", 30001))),
        )),)),
        id="ipv6-twin-on-another-port-is-not-routed",
    ))

    starting = task(demo, "wrk-2", slot=3, state="starting", ports={8080: 30003})
    draining = task(demo, "wrk-2", slot=4, desired="shutdown", ports={8080: 30004})
    wrong_port = task(demo, "wrk-2", slot=5, ports={9090: 30005})
    on_down_node = task(demo, "down-0", slot=6, ports={8080: 30006})
    out.append(pytest.param(
        state(demo, t0, starting, draining, wrong_port, on_down_node,
              nodes=[*NODES, node("down-0", "10.0.0.99", state="down")]),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (
            route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000),)),
        )),)),
        id="only-running-tasks-on-ready-nodes-with-the-label-port-are-upstreams",
    ))

    out.append(pytest.param(
        state(demo),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (route("demo.local", "/", ("demo",), ()),)),)),
        id="host-with-no-running-task-keeps-its-route-with-no-upstreams",
    ))
    # One task rolled stop-first: Swarm wants it stopped, its container has not had the signal yet.
    stopping = task(demo, "wrk-1", slot=1, desired="shutdown", ports={8080: 30007})
    stopped = task(demo, "wrk-0", slot=1, state="shutdown", desired="shutdown", ports={8080: 30008})
    out.append(pytest.param(
        state(demo, stopping, stopped, starting, on_down_node,
              nodes=[*NODES, node("down-0", "10.0.0.99", state="down")]),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (
            route("demo.local", "/", ("demo",), (up(demo, stopping, "10.0.0.11", 30007),)),
        )),)),
        id="a-service-whose-only-running-task-is-being-stopped-keeps-it-until-it-stops",
    ))

    out.append(pytest.param(
        state(demo, t0, canary, c0),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (
            route("demo.local", "/", ("demo", "demo-canary"),
                  (up(demo, t0, "10.0.0.10", 30000), up(canary, c0, "10.0.0.12", 30002))),
        )),)),
        id="services-sharing-host-and-path-are-pooled-canary",
    ))

    bad = service("bad", lb(hosts="bad.local", port="eighty"))
    vip = service("vip", lb(hosts="vip.local", backend_mode="vip"))
    passthrough = service("pass", lb(hosts="pass.local", ssl_passthrough="true"))
    p0 = task(passthrough, "wrk-1", ports={8080: 30443})
    unpublished = service("nopub", lb(hosts="nopub.local"), host_ports=())
    out.append(pytest.param(
        state(demo, t0, bad, vip, passthrough, p0, unpublished),
        RouteTable(
            cluster="",
            hosts=(HostRoute("demo.local", (
                route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000),)),)),),
            passthrough=(PassthroughRoute("pass.local", pool_name("pass.local", ":tls"), ("pass",),
                                          (up(passthrough, p0, "10.0.0.11", 30443),)),),
            set_aside=(
                SetAside("bad", "label com.docker.lb.port: expected an integer 1-65535, got 'eighty'", kind="port"),
                SetAside("nopub", "publishes no host-mode port for target port 8080 and is on no overlay network "
                                  "(add --network NET, or --publish mode=host,target=8080)", kind="no_host_port"),
                SetAside("vip", "label com.docker.lb.backend_mode=vip needs the service on an overlay network "
                                "(add --network NET)", kind="vip_backend"),
            ),
        ),
        id="invalid-or-unsupported-services-are-set-aside-others-routed-passthrough-by-sni",
    ))

    app = service("app", lb(context_root="/app", context_root_rewrite="true", websocket_endpoints="/app/ws"),
                  created_at=NEW)
    a0 = task(app, "wrk-2", ports={8080: 30010})
    out.append(pytest.param(
        state(demo, t0, app, a0),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (
            route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000),)),
            route("demo.local", "/app", ("app",), (up(app, a0, "10.0.0.12", 30010),), strip_prefix="/app"),
            route("demo.local", "/app/ws", ("app",), (up(app, a0, "10.0.0.12", 30010),), strip_prefix="/app",
                  websocket=True),
        )),)),
        id="context-root-and-websocket-endpoint-are-own-locations",
    ))

    tls_old = service("shop", lb(hosts="shop.local", ssl_cert="shop.crt", ssl_key="shop.key",
                                 sticky_session_cookie="sid"), created_at=OLD)
    tls_new = service("shop-v2", lb(hosts="shop.local", ssl_cert="evil.crt", ssl_key="evil.key"), created_at=NEW)
    out.append(pytest.param(
        state(tls_old, tls_new, *secrets("shop.crt", "shop.key", "evil.crt", "evil.key")),
        RouteTable(
            cluster="",
            hosts=(HostRoute("shop.local", (route("shop.local", "/", ("shop", "shop-v2"), (), sticky_cookie="sid"),),
                             tls=TLSFiles("shop.crt", "shop.key")),),
            notices=(
                "host shop.local path /: sticky_session_cookie of service shop-v2 (not set) overruled by older "
                "service shop (sid)",
                "host shop.local: ssl_cert/ssl_key of service shop-v2 (evil.crt/evil.key) overruled by older "
                "service shop (shop.crt/shop.key)",
            ),
        ),
        id="conflicting-settings-on-one-host-oldest-service-wins-and-is-reported",
    ))

    old_site = service("old-site", lb(hosts="old.local", redirects="http://old.local,https://new.local"))
    out.append(pytest.param(
        state(old_site),
        RouteTable(cluster="", hosts=(HostRoute("old.local", (), redirect="https://new.local"),),
                   notices=("host old.local: redirected to https://new.local; its routes (old-site) are not served",)),
        id="redirect-replaces-the-routes-of-its-host",
    ))

    fallback = service("fallback", {"com.docker.lb.default_backend": "true", "com.docker.lb.port": "8080"})
    f0 = task(fallback, "wrk-1", ports={8080: 30020})
    out.append(pytest.param(
        state(fallback, f0),
        RouteTable(cluster="", default_backend=route("_default", "/", ("fallback",),
                                                     (up(fallback, f0, "10.0.0.11", 30020),))),
        id="default-backend-serves-unknown-hosts",
    ))

    mgr = service("on-manager", lb(hosts="mgr.local"))
    m0 = task(mgr, "mgr-0", ports={8080: 30030})
    manager = node("mgr-0", "0.0.0.0", role="manager")
    manager["ManagerStatus"]["Addr"] = "10.0.0.2:2377"
    out.append(pytest.param(
        state(mgr, m0, nodes=[manager]),
        RouteTable(cluster="", hosts=(HostRoute("mgr.local", (
            route("mgr.local", "/", ("on-manager",), (up(mgr, m0, "10.0.0.2", 30030),)),)),)),
        id="manager-reporting-0.0.0.0-is-reached-at-its-manager-address",
    ))

    east = service("east-app", lb(hosts="east.local", service_cluster="east"))
    out.append(pytest.param(
        state(demo, east),
        RouteTable(cluster="", hosts=(HostRoute("demo.local", (route("demo.local", "/", ("demo",), ()),)),)),
        id="extension-without-cluster-gets-only-services-without-cluster-label",
    ))
    return out


@pytest.mark.parametrize(("observed", "expected"), scenarios())
def test_route_table(observed: ObservedState, expected: RouteTable) -> None:
    assert build_route_table(observed, HOST) == expected


def test_extension_with_a_service_cluster_gets_only_that_clusters_services() -> None:
    east = service("east-app", lb(hosts="east.local", service_cluster="east"))
    bad_east = service("east-bad", lb(hosts="x.local", port="0", service_cluster="east"))
    ext = Extension(name="east", publish_mode="host", service_cluster="east")
    assert build_route_table(state(demo, east, bad_east), ext) == RouteTable(
        cluster="east",
        hosts=(HostRoute("east.local", (route("east.local", "/", ("east-app",), ()),)),),
        set_aside=(SetAside("east-bad", "label com.docker.lb.port: expected an integer 1-65535, got '0'",
                            kind="port"),),
    )


def test_invalid_port_label_sets_only_that_service_aside() -> None:
    broken = service("broken", lb(port="http"))
    table = build_route_table(state(demo, t0, broken), HOST)
    assert [s.service for s in table.set_aside] == ["broken"]
    assert build_route_table(state(demo, t0, broken), HOST).hosts == build_route_table(state(demo, t0), HOST).hosts


def test_the_same_snapshot_in_any_order_gives_the_same_table() -> None:
    items = [demo, t0, t1, canary, c0]
    reference = build_route_table(state(*items), HOST)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(items)
        assert build_route_table(state(*items), HOST) == reference


def test_secrets_lists_every_tls_secret_the_proxy_must_mount() -> None:
    a = service("a", lb(hosts="a.local", ssl_cert="a.crt", ssl_key="a.key"))
    b = service("b", lb(hosts="b.local", ssl_cert="shared.crt", ssl_key="shared.key"))
    observed = state(a, b, *secrets("a.crt", "a.key", "shared.crt", "shared.key"))
    assert build_route_table(observed, HOST).secrets == ("a.crt", "a.key", "shared.crt", "shared.key")


def test_pool_names_are_stable_and_safe_words() -> None:
    assert pool_name("demo.local", "/") == "b31d9ce8de094eea_demo_local"  # the same every pass, every run
    assert pool_name("demo.local", "/a") != pool_name("demo.local", "/a_")
    assert pool_name("*.example.com", "/api/v1").replace("_", "").isalnum()


def test_services_of_a_cluster_no_extension_serves_are_reported_as_unclaimed() -> None:
    west = service("west-app", lb(hosts="west.local", service_cluster="west"))
    plain = service("plain", lb(hosts="plain.local"))
    assert unclaimed_services(state(demo, west, plain), ["east"]) == (
        SetAside("demo", "no extension serves services without a service cluster (every extension has a "
                         "ServiceCluster)", kind="no_extension"),
        SetAside("plain", "no extension serves services without a service cluster (every extension has a "
                          "ServiceCluster)", kind="no_extension"),
        SetAside("west-app", "no extension serves service cluster 'west'", kind="no_extension"),
    )
    assert unclaimed_services(state(demo, west), ["", "west"]) == ()


def test_a_redirect_from_a_host_the_service_does_not_route_is_refused_and_its_own_hosts_stay_routed() -> None:
    hijack = service("hijack", lb(hosts="elsewhere.local", redirects="http://demo.local,http://evil.local"),
                     created_at=OLD)
    table = build_route_table(state(demo, t0, hijack), HOST)
    assert table == RouteTable(
        cluster="",
        hosts=(
            HostRoute("demo.local", (route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000),)),)),
            HostRoute("elsewhere.local", (route("elsewhere.local", "/", ("hijack",), ()),)),
        ),
        notices=("service hijack: redirect from demo.local refused: the service does not route demo.local "
                 "(add it to com.docker.lb.hosts to redirect it)",),
    )


def test_a_younger_service_sharing_a_host_cannot_redirect_it_away_from_the_older_service() -> None:
    hijack = service("hijack", lb(hosts="demo.local", redirects="http://demo.local,http://evil.local"),
                     created_at=NEW)
    table = build_route_table(state(demo, t0, hijack), HOST)
    assert [(h.host, h.redirect) for h in table.hosts] == [("demo.local", None)]
    assert table.notices == ("host demo.local: redirect of service hijack (http://evil.local) overruled by older "
                             "service demo (not set)",)


def test_a_younger_services_tls_on_an_older_services_host_is_overruled_and_reported() -> None:
    younger = service("tls-canary", lb(ssl_cert="c.crt", ssl_key="c.key"), created_at=NEW)
    table = build_route_table(state(demo, younger, *secrets("c.crt", "c.key")), HOST)
    assert [h.tls for h in table.hosts] == [None]
    assert table.notices == ("host demo.local: ssl_cert/ssl_key of service tls-canary (c.crt/c.key) overruled "
                             "by older service demo (not set)",)


def test_a_service_with_an_invalid_cluster_label_is_set_aside_by_the_extension_without_cluster() -> None:
    odd = service("odd", lb(hosts="odd.local", service_cluster="no such/cluster"))
    assert build_route_table(state(odd), HOST).set_aside == (
        SetAside("odd", "label com.docker.lb.service_cluster: expected a name of letters, digits, '_', '.', '-' "
                        "(at most 64), got 'no such/cluster'", kind="service_cluster"),
    )


TOKEN = swarm_secret("swarmgate-channel")
OWNED = swarm_secret("interlock-proxy.tls", labels={"swarmgate.managed-by": "swarmgate"})
SHOP_CRT, SHOP_KEY = swarm_secret("shop.crt"), swarm_secret("shop.key")


def tls(name: str, cert: str, key: str) -> dict[str, Any]:
    return service(name, lb(hosts=f"{name}.local", ssl_cert=cert, ssl_key=key))


@pytest.mark.parametrize(
    ("svc", "unusable", "expected"),
    [
        pytest.param(tls("shop", "shop.crt", "no-such-secret"), set(), SetAside(
            "shop", "label com.docker.lb.ssl_key: no Swarm secret named 'no-such-secret' (create it with "
                    "`docker secret create no-such-secret FILE`, or fix the label)", kind="missing_secret"),
            id="missing-secret"),
        pytest.param(tls("shop", "swarmgate-channel", "shop.key"), set(), SetAside(
            "shop", "label com.docker.lb.ssl_cert: Swarm secret 'swarmgate-channel' belongs to swarmgate itself "
                    "and cannot be used as a certificate or key", kind="forbidden_secret"),
            id="the-proxy-token"),
        pytest.param(tls("shop", "shop.crt", "interlock-proxy.tls"), set(), SetAside(
            "shop", "label com.docker.lb.ssl_key: Swarm secret 'interlock-proxy.tls' belongs to swarmgate itself "
                    "and cannot be used as a certificate or key", kind="forbidden_secret"),
            id="a-secret-labelled-as-swarmgates"),
        pytest.param(tls("shop", "shop.crt", "shop.key"), {SHOP_CRT["ID"]}, SetAside(
            "shop", f"label com.docker.lb.ssl_cert: nginx in the proxy cannot load Swarm secret 'shop.crt' "
                    f"(ID {SHOP_CRT['ID'][:12]}) as a PEM certificate or key; create a secret with a PEM certificate "
                    "chain or key and point the label at it", kind="unusable_secret"),
            id="a-secret-id-a-proxy-could-not-load"),
    ],
)
def test_a_tls_secret_the_proxy_may_not_mount_sets_only_that_service_aside(
    svc: dict[str, Any], unusable: set[str], expected: SetAside
) -> None:
    table = build_route_table(state(demo, t0, svc, TOKEN, OWNED, SHOP_CRT, SHOP_KEY), HOST,
                              unusable_secrets=unusable)
    assert table == RouteTable(
        cluster="",
        hosts=(HostRoute("demo.local", (route("demo.local", "/", ("demo",), (up(demo, t0, "10.0.0.10", 30000),)),)),),
        set_aside=(expected,),
    )
    assert table.secrets == ()


def test_a_new_secret_under_an_unusable_secrets_name_has_a_new_id_and_is_used() -> None:
    renewed = swarm_secret("shop.crt")
    renewed["ID"] = "renewed0000000000000000000"
    table = build_route_table(state(tls("shop", "shop.crt", "shop.key"), renewed, SHOP_KEY), HOST,
                              unusable_secrets={SHOP_CRT["ID"]})
    assert (table.set_aside, table.secrets) == ((), ("shop.crt", "shop.key"))


def test_two_services_naming_the_same_secrets_for_different_hosts_mount_them_once() -> None:
    a, b = tls("a", "shop.crt", "shop.key"), tls("b", "shop.crt", "shop.key")
    table = build_route_table(state(a, b, SHOP_CRT, SHOP_KEY), HOST)
    assert [(h.host, h.tls) for h in table.hosts] == [("a.local", TLSFiles("shop.crt", "shop.key")),
                                                      ("b.local", TLSFiles("shop.crt", "shop.key"))]
    assert table.secrets == ("shop.crt", "shop.key")


def test_pool_names_carry_64_bits_of_digest_so_labels_cannot_be_made_to_collide() -> None:
    # A duplicate upstream name makes nginx reject the whole config.
    name = pool_name("demo.local", "/")
    assert name.endswith("_demo_local") and len(name.split("_", 1)[0]) == 16


@pytest.mark.parametrize(("declared", "expected"), [
    pytest.param((None, None), 1.5, id="none-declared-the-default"),
    pytest.param((None, 5.0), 1.5, id="longer-than-the-default-keeps-it"),
    pytest.param((2.0, None), 1.0, id="gunicorn-half"),
    pytest.param((2.0, 0.5), 0.25, id="pooled-the-shortest-counts"),
    pytest.param((2.0, 0.0), None, id="zero-keeps-none"),
    pytest.param((0.0015,), None, id="under-a-millisecond-keeps-none"),
])
def test_a_pool_idles_half_its_shortest_declared_backend_idle_timeout(
        declared: tuple[float | None, ...], expected: float | None) -> None:
    assert pool_idle_timeout(1.5, shortest_idle(declared)) == expected

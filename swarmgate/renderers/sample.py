"""A representative route table: what `check-config` renders to try an extension's options (pure).

It uses every part of the default template a label can switch on (TLS servers, a context root with
and without rewriting, websockets, sticky cookies, ip_hash, a redirect, a default backend, a host
with no running task, a 253-character host name that stretches the server-name hash, and a location
with every policy: limit zones, weights, a canary, an error page), so that options which only matter
inside those blocks (`SSLOpts`, cipher lists, zone sizes, an `HTTPOptions` zone of the same name as
swarmgate's) are checked in the blocks they end up in.
"""

from __future__ import annotations

from swarmgate.models.routing.policy_labels import ErrorPage, RoutePolicy
from swarmgate.models.routing.policy_values import Canary, RateLimit
from swarmgate.models.routing.route_types import HostRoute, PathRoute, RouteTable, ServerParams, TLSFiles, Upstream

_LONG_HOST = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57]) + ".local"


def _ups(service: str, *ports: int) -> tuple[Upstream, ...]:
    return tuple(Upstream(f"198.18.0.{10 + i}", port, f"{service}task{i:020d}", f"node{i}", service)
                 for i, port in enumerate(ports))


def sample_route_table(cluster: str = "") -> RouteTable:
    demo = _ups("demo", 30000, 30001)
    shop = _ups("shop", 30010)
    return RouteTable(
        cluster=cluster,
        hosts=(
            HostRoute("demo.local", (
                PathRoute("/", "demo_local_0001", ("demo",), demo),
                PathRoute("/app", "demo_local_app_0002", ("app",), _ups("app", 30020), strip_prefix="/app",
                          websocket=True),
                PathRoute("/static", "demo_local_static_0003", ("static",), ()),
            )),
            HostRoute("shop.local", (PathRoute("/", "shop_local_0004", ("shop",), shop,
                                               sticky_cookie="session_id"),),
                      tls=TLSFiles("shop.crt", "shop.key")),
            HostRoute("api.local", (PathRoute("/", "api_local_0005", ("api",), _ups("api", 30030), ip_hash=True),)),
            HostRoute("old.local", (), redirect="https://shop.local"),
            HostRoute(_LONG_HOST, (PathRoute("/", "long_0006", ("long",), _ups("long", 30040)),)),
            HostRoute("guarded.local", (_guarded(),)),
        ),
        default_backend=PathRoute("/", "default_0007", ("fallback",), _ups("fallback", 30050)),
    )


def _guarded() -> PathRoute:
    """A location with every policy (the `swarmgate.*` policy labels)."""
    policy = RoutePolicy(auth_secret="users.htpasswd", allow=("10.0.0.0/8",), deny=("10.0.0.1/32",),
                         rate=RateLimit(600, 10), connections=10, max_body=1024, headers=(("X-Robots-Tag", "none"),),
                         error_pages=(ErrorPage(503, "sorry", "<p>sorry</p>", "0123456789abcdef"),),
                         connect_timeout_ms=2000, read_timeout_ms=60_000, send_timeout_ms=60_000)
    canary = PathRoute("/", "guarded_local_canary_0009", ("beta",), _ups("beta", 30070), policy=policy)
    return PathRoute("/", "guarded_local_0008", ("stable",), _ups("stable", 30060, 30061), policy=policy,
                     params=(ServerParams(90_000, 3, 10), ServerParams(10_000)), canary=canary,
                     canary_match=Canary("header", "X-Canary", "beta"))

"""Which server block and which upstream layout each route takes (pure): a host of its own or a name of a
shared server, a pool on swarmgate's Lua balancer or an `upstream` block of its own, and the connect
timeout of a pool that fails over fast. The renderer (`nginx.py`) lays the config out by these."""

from __future__ import annotations

from swarmgate.models.routing.route_types import HostRoute, PathRoute
from swarmgate.models.settings.extension import Extension

# Words a `map` block reads as its own directives rather than as a host name.
_MAP_KEYWORDS = frozenset({"default", "hostnames", "include", "volatile"})

# proxy_connect_timeout of a pool of two or more tasks (`PathRoute.fails_over_fast`), in ms.
# A connect that completes on the first SYN or on TCP's first retry (at 1 s) is untouched; one that
# would wait for the second retry (at 3 s), or for ARP to give up on a dead node (about 3 s), goes to
# another task at 1.5 s instead (nothing was sent yet, so for any method: proxy_next_upstream's
# `timeout`), within a 2 s client's patience.
FAILOVER_CONNECT_MS = 1500


def pool_failover_ms(ext: Extension, route: PathRoute) -> int | None:
    """The connect timeout of the route's pool whenever it has two or more tasks, or None: a canary
    beside it, or the service's own `swarmgate.connect_timeout` (which wins). `ConnectTimeout`, when
    lower, wins too. LuaBalancer's peers carry it whatever the pool's size (the balancer applies it
    from two peers on), so a scale 1 -> 2 changes only the peers."""
    if route.canary is not None or (route.policy is not None and route.policy.connect_timeout_ms is not None):
        return None
    return min(FAILOVER_CONNECT_MS, ext.config.connect_timeout * 1000)


def failover_connect_ms(ext: Extension, route: PathRoute) -> int | None:
    """The connect timeout the route's location (or shared server) sets for fast failover, or None:
    fewer than two tasks, or `pool_failover_ms` says none."""
    return pool_failover_ms(ext, route) if route.fails_over_fast else None


def needs_own_server(host: HostRoute) -> bool:
    """Whether a host needs a `server` block of its own: TLS, a redirect, a path other than `/`, a
    context root to strip or websocket headers. Every other host gets one too while there are few
    (`shares_a_server`), else is one name of a shared server whose pool a `map` of the host name picks:
    10,000 server blocks cost nginx ~400 MiB and seconds of `nginx -t`, one shared server almost nothing."""
    if host.tls is not None or host.redirect is not None or len(host.paths) != 1:
        return True
    route = host.paths[0]
    # A verified TLS backend names its CA bundle in its location (nginx takes no variable there).
    verified = route.backend_tls is not None and route.backend_tls.ca is not None
    return (route.path != "/" or bool(route.strip_prefix) or route.websocket or verified or route.own_location
            or host.host in _MAP_KEYWORDS)


def shares_a_server(ext: Extension, plain_hosts: int) -> bool:
    """Whether the hosts that need no server of their own share one (`SharedServerFrom`): only from that
    many on, where a server each would cost memory (about 27 KiB per host); below it each gets a server
    whose location names its pool, which nginx binds while parsing instead of on every request."""
    return ext.config.shared_server_from > 0 and plain_hosts >= ext.config.shared_server_from


def balanced_by_lua(route: PathRoute) -> bool:
    """Whether `LuaBalancer` may serve this pool: plain round robin over running tasks. A pool that
    hashes (a sticky cookie, ip_hash), weighs its tasks or sets their failure knobs (`params`), keeps
    its tasks' idle timeout (`swarmgate.backend_idle_timeout`) or splits for a canary keeps an
    `upstream` block of its own, where nginx does what the balancer does not."""
    return (bool(route.upstreams) and route.sticky_cookie is None and not route.ip_hash and not route.params
            and route.backend_idle_timeout is None and route.canary is None)

"""What the proxies' traffic counters are about, in the route table's words (pure).

A proxy counts each request under its route's KEY and the upstream address nginx used last
(`delivery/traffic_file.py`). The metrics name the host, path and service instead:

* KEY → (host, path) through the route table: every host and path of the table, a host without
  paths under `/`, and the default server (`DEFAULT_KEY`) as host `-` and path `-`. A KEY the table
  does not know (a route removed since the proxy counted it) is split as text: the host up to the
  first `/`, the path from it.
* UPSTREAM (`address:port`) → the service whose task it is, from the table's pools (canaries
  included); `-` when nginx used no upstream or the address is no longer in the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from swarmgate.models.routing.route_types import RouteTable
from swarmgate.models.routing.traffic_key import DEFAULT_KEY, traffic_key

NO_SERVICE = "-"
DEFAULT_ROUTE = ("-", "-")


@dataclass(frozen=True)
class TrafficNames:
    """One extension's KEY → (host, path) and `address:port` → service."""

    routes: dict[str, tuple[str, str]] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)

    def route(self, key: str) -> tuple[str, str]:
        known = self.routes.get(key)
        if known is not None:
            return known
        if key == DEFAULT_KEY:
            return DEFAULT_ROUTE
        slash = key.find("/")
        return (key, "") if slash < 0 else (key[:slash], key[slash:])

    def service(self, upstream: str) -> str:
        return self.services.get(upstream, NO_SERVICE)


def traffic_names(table: RouteTable) -> TrafficNames:
    routes: dict[str, tuple[str, str]] = {DEFAULT_KEY: DEFAULT_ROUTE}
    for host in table.hosts:
        if not host.paths:
            routes[traffic_key(host.host, None)] = (host.host, "/")
        for path in host.paths:
            routes[traffic_key(host.host, path.path)] = (host.host, path.path)
    services: dict[str, str] = {}
    # Sorted, so that an address two services claim (it cannot happen with host ports) names the
    # same one on every pass.
    for pool in sorted(table.pools, key=lambda p: (p.pool, p.path)):
        for upstream in pool.upstreams:
            services.setdefault(f"{upstream.address}:{upstream.port}", upstream.service)
    return TrafficNames(routes, services)

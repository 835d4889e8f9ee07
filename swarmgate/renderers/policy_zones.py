"""The shared-memory zones of the per-route limits, and the filters that write policy values (pure).

nginx ties a request rate to its `limit_req_zone`, so there is one zone per distinct rate in the
table, and one `limit_conn_zone` for every connection limit; each is keyed by the client's address and
the location's pool digest (`$swarmgate_limit_scope`, set in the location), so locations that share
a zone never share counters. Labels choose rates, never sizes: 10,000 services with one rate share
one zone, and many distinct rates split a fixed budget (at least nginx's smallest useful zone each),
so no label can make nginx map more memory than the number of distinct rates allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarmgate.errors import RenderError
from swarmgate.models.routing.policy_values import RateLimit, nginx_quoted
from swarmgate.models.routing.route_types import RouteTable

# A state is about 100 bytes (key: 4 or 16 bytes of address and 16 of digest): 8 MiB keep ~80,000
# clients per zone; nginx forgets the oldest when a zone is full, it does not refuse.
REQUEST_BUDGET_KB = 64 * 1024
MAX_ZONE_KB = 8 * 1024
MIN_ZONE_KB = 64  # nginx needs 8 pages at least; 64 KiB keep ~600 clients
CONNECTION_ZONE_KB = 8 * 1024
_HEADER_VALUE = re.compile(r"[ !#%&'()*+,\-./0-9:;<=>?@A-Z\[\]^_`a-z{|}~]{1,1024}")


@dataclass(frozen=True)
class LimitZone:
    name: str
    rate: str
    size_kb: int


@dataclass(frozen=True)
class LimitZones:
    requests: tuple[LimitZone, ...] = ()
    connections: int = 0  # KiB of the one connection zone; 0: none


def zone_name(rate: RateLimit) -> str:
    """The zone of a rate: every location with this rate uses it."""
    return f"swarmgate_req_{rate.per_minute}m"


def limit_zones(table: RouteTable) -> LimitZones:
    rates = sorted({p.policy.rate.per_minute for p in table.pools if p.policy and p.policy.rate})
    size = max(MIN_ZONE_KB, min(MAX_ZONE_KB, REQUEST_BUDGET_KB // max(1, len(rates))))
    requests = tuple(LimitZone(zone_name(RateLimit(r)), RateLimit(r).nginx_rate, size) for r in rates)
    connections = any(p.policy and p.policy.connections for p in table.pools)
    return LimitZones(requests=requests, connections=CONNECTION_ZONE_KB if connections else 0)


def header_value(value: object) -> str:
    """A response header's value, checked again where it is written (see policy_values)."""
    text = str(value)
    if not _HEADER_VALUE.fullmatch(text):
        raise RenderError(f"refusing to write header value {text[:60]!r} into the nginx config")
    return text


def page_text(value: object) -> str:
    """An error page's text, escaped for an nginx double-quoted string."""
    return nginx_quoted(str(value))

"""The name a route's traffic is counted under in the proxies' traffic log (pure).

The KEY is fixed by the rendered configuration, never taken from the request: an attacker's random
Host header must not add a series. It is the route's host and path (`demo.local/ping`,
`demo.local/`); a host served without paths (a whole-host redirect) counts under its host and `/`;
the default server (unknown hosts, `nginx_status`, ACME challenges, the default backend) under
`DEFAULT_KEY`. The renderer writes it into the log (`$swarmgate_route`); the operator reads it back
from the traffic file to name each series.
"""

from __future__ import annotations

DEFAULT_KEY = "-"


def traffic_key(host: str, path: str | None) -> str:
    """The KEY of the route serving `path` (None: the whole host) of `host`."""
    return host + (path if path is not None else "/")

"""The key a route's traffic is counted under (pure).

The proxy logs one key per request and the operator turns keys back into labels, so both sides
compute it here. The key is fixed by the config, never taken from the request: a client's random
Host header must not add a series.
"""

from __future__ import annotations

# The default server: unknown hosts, nginx_status and ACME challenges of no route.
DEFAULT_KEY = "-"


def traffic_key(host: str, path: str | None) -> str:
    """`HOST + PATH` of a route (`demo.local/ping`); a host's root, or a host without paths (redirects
    only), is `HOST/`."""
    return host + (path or "/")

"""Every route of a pass as plain rows, for `/v1/status` and the status page (pure).

One row per host and path of each extension (a whole-host redirect or an `ssl_only` host without
paths is one row with path None), one per SSL-passthrough host, and one for the default backend
(host `*`). A row names what a person needs to see why a request gets what it gets: the services,
their upstreams (`address:port`: node address and host port, or a task's or VIP's address), the
certificate's Swarm secret name (a name, never its data: the operator never reads a secret), and
the route's settings in plain words. It holds no key, token or label value that was not parsed.

`asked_hosts` reads the host names a service's label asks for, leniently, so that a service set
aside for another label can still be found by the host that now answers 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmgate.models.routing.label_values import LabelValueError, parse_hostname
from swarmgate.models.routing.labels import PREFIX
from swarmgate.models.routing.route_types import HostRoute, PathRoute, RouteTable, Upstream
from swarmgate.operator.planning.desired import DesiredState

HOSTS_LABEL = PREFIX + "hosts"
# A set-aside service's label may be long and invalid: the page lists only this many of its hosts.
MAX_ASKED_HOSTS = 20


def route_rows(desired: DesiredState) -> list[dict[str, Any]]:
    """The routes of every extension, sorted by extension, host and path."""
    rows: list[dict[str, Any]] = []
    for ext in desired.extensions:
        rows.extend(_table_rows(ext.name, ext.route_table))
    return rows


def _table_rows(extension: str, table: RouteTable) -> list[dict[str, Any]]:
    rows = []
    for host in table.hosts:
        for path in host.paths or (None,):
            rows.append(_row(extension, host.host, path, host=host))
    for p in table.passthrough:
        rows.append({**_base(extension, p.host, None, p.services, p.upstreams),
                     "tls": {"source": "passthrough", "secret": None}, "settings": ["TLS passed through (SNI)"]})
    if table.default_backend is not None:
        rows.append(_row(extension, "*", table.default_backend, host=None))
    return rows


def _base(extension: str, host: str, path: str | None, services: tuple[str, ...],
          upstreams: tuple[Upstream, ...]) -> dict[str, Any]:
    return {"extension": extension, "host": host, "path": path, "services": list(services),
            "upstreams": [f"{u.address}:{u.port}" for u in upstreams]}


def _row(extension: str, name: str, path: PathRoute | None, *, host: HostRoute | None) -> dict[str, Any]:
    row = _base(extension, name, path.path if path else None, path.services if path else (),
                path.upstreams if path else ())
    cert = host.tls.cert if host is not None and host.tls is not None else None
    row["tls"] = {"source": "secret" if cert else None, "secret": cert}
    row["redirect"] = host.redirect if host is not None else None
    row["settings"] = _settings(path, host)
    return row


def _settings(path: PathRoute | None, host: HostRoute | None) -> list[str]:
    """The route's settings, each in a few words (no value a label carried unparsed)."""
    words = []
    if host is not None and host.ssl_only:
        words.append("HTTPS only")
    if host is not None and host.hsts is not None:
        words.append(f"HSTS {host.hsts.max_age}s")
    if path is not None:
        if path.strip_prefix:
            words.append(f"strips {path.strip_prefix}")
        if path.websocket:
            words.append("WebSocket")
        if path.sticky_cookie:
            words.append(f"sticky (cookie {path.sticky_cookie})")
        if path.ip_hash:
            words.append("IP hash")
        if path.backend_tls is not None:
            words.append("TLS to tasks" + (" (verified)" if path.backend_tls.ca else ""))
    return words


def asked_hosts(labels: Mapping[str, str]) -> list[str]:
    """The valid host names among a service's `com.docker.lb.hosts`, whatever else is wrong with it."""
    found: set[str] = set()
    for part in labels.get(HOSTS_LABEL, "").split(","):
        try:
            found.add(parse_hostname(part))
        except LabelValueError:
            continue
    return sorted(found)[:MAX_ASKED_HOSTS]

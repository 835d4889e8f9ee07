"""`com.docker.lb.*` service labels → a typed `ServiceRouting`, or a `SetAside` with a reason (pure).

Every label Interlock documents is parsed into a typed value (see `label_values`). One invalid value
sets only that service aside, with one line a user understands: which label, which value, what is
allowed. Unknown `com.docker.lb.*` labels do not set a service aside (Interlock grew labels over time
and a route should not vanish for one it does not need); they are reported as notices, with the
closest known label when it looks like a typo.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, get_args

from swarmgate.models.routing.label_values import (
    LabelValueError,
    parse_bool,
    parse_cookie_name,
    parse_hostnames,
    parse_path,
    parse_paths,
    parse_port,
    parse_redirects,
    parse_swarm_name,
    shown,
)

PREFIX = "com.docker.lb."
LabelName = Literal[
    "backend_mode",
    "context_root",
    "context_root_rewrite",
    "default_backend",
    "hosts",
    "ip_hash",
    "network",
    "port",
    "redirects",
    "service_cluster",
    "ssl_cert",
    "ssl_key",
    "ssl_passthrough",
    "sticky_session_cookie",
    "websocket_endpoints",
]
KNOWN_LABELS: tuple[LabelName, ...] = get_args(LabelName)
# Reasons that are not one rejected label. Metrics, logs and the CLI all take kinds from here.
OtherKind = Literal[
    "vip_backend",      # backend_mode=vip on a service that is on no overlay network
    "no_host_port",     # the port label's target port is not published in host mode, and no overlay network
    "no_extension",     # no extension serves the service's cluster
    "missing_secret",   # ssl_cert/ssl_key names no Swarm secret
    "forbidden_secret",  # ssl_cert/ssl_key names a secret swarmgate owns (the channel key, ...)
    "unusable_secret",  # nginx in a proxy could not load the secret as a certificate or key
    "undelivered_secret",  # the certificate courier did not bring the secret to a proxy in time
    "too_many_routes",  # hosts times paths beyond MAX_LOCATIONS
    "other",
]
OTHER_KINDS: tuple[OtherKind, ...] = get_args(OtherKind)
ReasonKind = LabelName | OtherKind
# Why a service is set aside, as a closed set fit for a metric label: the one list of them.
REASON_KINDS: tuple[str, ...] = (*sorted(KNOWN_LABELS), *OTHER_KINDS)
_LABEL_NAMES: dict[str, LabelName] = {name: name for name in KNOWN_LABELS}
# Each host and path of a service is an nginx location with its own upstream and shared-memory zone:
# measured with nginx 1.22, 5000 of them cost `nginx -t` 1.7 s and 280 MB, on every proxy, at every
# reload. One service's labels alone could otherwise ask for 1000 hosts with 101 paths each.
MAX_LOCATIONS = 1000


@dataclass(frozen=True)
class SetAside:
    """A service that is not routed, the one-line reason why, and the kind of reason: the label that
    was rejected or is missing, or one of `OTHER_KINDS` (together `REASON_KINDS`, a closed set)."""

    service: str
    reason: str
    kind: ReasonKind = "other"


@dataclass(frozen=True)
class ServiceRouting:
    """What one service's labels ask for, every value typed and validated."""

    service: str
    hosts: tuple[str, ...] = ()
    port: int = 0
    network: str | None = None
    context_root: str = "/"
    context_root_rewrite: bool = False
    ssl_cert: str | None = None
    ssl_key: str | None = None
    ssl_passthrough: bool = False
    websocket_endpoints: tuple[str, ...] = ()
    service_cluster: str = ""
    sticky_session_cookie: str | None = None
    ip_hash: bool = False
    redirects: tuple[tuple[str, str], ...] = ()
    backend_mode: Literal["task", "vip"] = "task"
    default_backend: bool = False
    notices: tuple[str, ...] = ()


def _backend_mode(value: str) -> Literal["task", "vip"]:
    # Interlock's documentation also writes `default` for task mode.
    if value in ("task", "default"):
        return "task"
    if value == "vip":
        return "vip"
    raise LabelValueError(f"expected task, default or vip, got {shown(value)}")


_PARSERS: dict[LabelName, Callable[[str], object]] = {
    "hosts": parse_hostnames,
    "port": parse_port,
    "network": parse_swarm_name,
    "context_root": parse_path,
    "context_root_rewrite": parse_bool,
    "ssl_cert": parse_swarm_name,
    "ssl_key": parse_swarm_name,
    "ssl_passthrough": parse_bool,
    "websocket_endpoints": parse_paths,
    # An empty cluster label is the same as none (a stack file may template it empty).
    "service_cluster": lambda value: parse_swarm_name(value) if value else "",
    "sticky_session_cookie": parse_cookie_name,
    "ip_hash": parse_bool,
    "redirects": parse_redirects,
    "backend_mode": _backend_mode,
    "default_backend": parse_bool,
}


def is_routed(labels: Mapping[str, str]) -> bool:
    """Whether a service asks for routing at all (carries any `com.docker.lb.*` label)."""
    return any(key.startswith(PREFIX) for key in labels)


def parse_service_labels(service_name: str, labels: Mapping[str, str]) -> ServiceRouting | SetAside | None:
    """The typed routing of one service; `None` when it carries no `com.docker.lb.*` label."""
    ours = tuple(sorted((key, value) for key, value in labels.items() if key.startswith(PREFIX)))
    return _parse_labels(service_name, ours) if ours else None


# Labels rarely change between passes, and each pass reads every service's labels more than once
# (per extension, and for unclaimed services): a result depends only on the name and the labels.
@functools.lru_cache(maxsize=1 << 16)
def _parse_labels(service_name: str, ours: tuple[tuple[str, str], ...]) -> ServiceRouting | SetAside:
    labels = dict(ours)
    values: dict[str, object] = {}
    notices: list[str] = []
    for key in sorted(labels):
        if not key.startswith(PREFIX):
            continue
        name = _LABEL_NAMES.get(key[len(PREFIX):])
        if name is None:
            close = difflib.get_close_matches(key[len(PREFIX):], KNOWN_LABELS, n=1, cutoff=0.7)
            hint = f" (did you mean {PREFIX}{close[0]}?)" if close else ""
            notices.append(
                f"service {service_name}: label {shown(key)} is not known to swarmgate; ignored{hint}"
            )
            continue
        try:
            values[name] = _PARSERS[name](labels[key])
        except LabelValueError as exc:
            return SetAside(service_name, f"label {key}: {exc}", kind=name)
    routing = ServiceRouting(service=service_name, notices=tuple(notices), **values)  # type: ignore[arg-type]
    problem = _missing(routing)
    if problem:
        return SetAside(service_name, problem[1], kind=problem[0])
    locations = len(routing.hosts) * len({routing.context_root, *routing.websocket_endpoints})
    if locations > MAX_LOCATIONS:
        return SetAside(service_name, f"asks for {locations} locations (each host with its context root and websocket "
                                      f"paths); at most {MAX_LOCATIONS} per service", kind="too_many_routes")
    return _own_redirects_only(routing)


def _own_redirects_only(r: ServiceRouting) -> ServiceRouting:
    """The routing without redirects from hosts the service does not route, each refused in a notice.

    Only that redirect is refused, not the whole service: its own hosts are valid and harm no one,
    and taking a site down for a redirect it may not make would turn a forgotten host into an outage.
    A redirect answers every request for its source host, so from another service's host it would
    take that host over; Interlock's documented example lists the source in `hosts` as well.
    """
    kept = tuple((source, target) for source, target in r.redirects if source in r.hosts)
    if len(kept) == len(r.redirects):
        return r
    refused = [
        f"service {r.service}: redirect from {source} refused: the service does not route {source} "
        f"(add it to {PREFIX}hosts to redirect it)"
        for source, _ in r.redirects if source not in r.hosts
    ]
    return replace(r, redirects=kept, notices=(*r.notices, *refused))


def _missing(r: ServiceRouting) -> tuple[LabelName, str] | None:
    """(kind, reason) of a required label that is missing or incomplete."""
    if not r.hosts and not r.default_backend:
        return "hosts", f"label {PREFIX}hosts is missing (or set {PREFIX}default_backend=true)"
    if not r.port:
        return "port", f"label {PREFIX}port is missing: the container port to route to"
    if (r.ssl_cert is None) != (r.ssl_key is None):
        if r.ssl_cert:
            return "ssl_cert", f"label {PREFIX}ssl_cert needs {PREFIX}ssl_key as well"
        return "ssl_key", f"label {PREFIX}ssl_key needs {PREFIX}ssl_cert as well"
    return None

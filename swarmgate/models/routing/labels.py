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

from swarmgate.models.quick_init import quick_init
from swarmgate.models.routing.https_values import parse_hsts_max_age, parse_tls_verify
from swarmgate.models.routing.keepalive import parse_backend_idle_timeout
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
from swarmgate.models.routing.policy_labels import (
    HEADER_LABEL,
    NO_POLICIES,
    POLICY_LABELS,
    POLICY_PARSERS,
    PolicyLabelError,
    PolicyLabelName,
    ServicePolicies,
    build_policies,
    parse_headers,
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
    "ssl_backend",
    "ssl_backend_tls_verify",
    "ssl_cert",
    "ssl_key",
    "ssl_only",
    "ssl_passthrough",
    "sticky_session_cookie",
    "websocket_endpoints",
]
KNOWN_LABELS: tuple[LabelName, ...] = get_args(LabelName)
# swarmgate's own labels, for what Interlock had no label for. Other `swarmgate.*` labels (such as
# `swarmgate.managed-by` on the operator's own objects) are not routing labels and are not read here.
OWN_PREFIX = "swarmgate."
OwnLabelName = Literal["acme", "backend_idle_timeout", "hsts", "hsts_preload", "hsts_subdomains", "ssl_backend_ca"]
OWN_LABELS: tuple[OwnLabelName, ...] = get_args(OwnLabelName)
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
    "ssl_only_without_tls",  # ssl_only on a service that gives its hosts no HTTPS (no ssl_cert, no passthrough)
    "other",
]
OTHER_KINDS: tuple[OtherKind, ...] = get_args(OtherKind)
ReasonKind = LabelName | OwnLabelName | PolicyLabelName | OtherKind
# Why a service is set aside, as a closed set fit for a metric label: the one list of them.
REASON_KINDS: tuple[str, ...] = (*sorted(KNOWN_LABELS), *OWN_LABELS, *POLICY_LABELS, *OTHER_KINDS)
_LABEL_NAMES: dict[str, LabelName | OwnLabelName | PolicyLabelName] = {
    **{PREFIX + name: name for name in KNOWN_LABELS}, **{OWN_PREFIX + name: name for name in OWN_LABELS},
    **{OWN_PREFIX + name: name for name in POLICY_LABELS if name != HEADER_LABEL}}
# `swarmgate.response_header.<Name>=<value>`: one label per header (policy_labels).
HEADER_PREFIX = f"{OWN_PREFIX}{HEADER_LABEL}."
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


@quick_init
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
    ssl_only: bool = False
    ssl_backend: bool = False
    ssl_backend_tls_verify: Literal["none", "required"] | None = None
    ssl_backend_ca: str | None = None
    hsts: int | None = None  # max-age, seconds
    hsts_subdomains: bool = False
    hsts_preload: bool = False
    acme: bool = False  # `swarmgate.acme=true`: each host gets a certificate from ACMEDirectory
    backend_idle_timeout: float | None = None  # seconds the tasks keep an idle connection (keepalive.py)
    websocket_endpoints: tuple[str, ...] = ()
    service_cluster: str = ""
    sticky_session_cookie: str | None = None
    ip_hash: bool = False
    redirects: tuple[tuple[str, str], ...] = ()
    backend_mode: Literal["task", "vip"] = "task"
    default_backend: bool = False
    policies: ServicePolicies = NO_POLICIES  # swarmgate's per-route policy labels (policy_labels)
    notices: tuple[str, ...] = ()


def _backend_mode(value: str) -> Literal["task", "vip"]:
    # Interlock's documentation also writes `default` for task mode.
    if value in ("task", "default"):
        return "task"
    if value == "vip":
        return "vip"
    raise LabelValueError(f"expected task, default or vip, got {shown(value)}")


_PARSERS: dict[str, Callable[[str], object]] = {
    **POLICY_PARSERS,
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
    "ssl_only": parse_bool,
    "ssl_backend": parse_bool,
    "ssl_backend_tls_verify": parse_tls_verify,
    "ssl_backend_ca": parse_swarm_name,
    "hsts": parse_hsts_max_age,
    "hsts_subdomains": parse_bool,
    "hsts_preload": parse_bool,
    "acme": parse_bool,
    "backend_idle_timeout": parse_backend_idle_timeout,
}


def is_routed(labels: Mapping[str, str]) -> bool:
    """Whether a service asks for routing at all (carries any `com.docker.lb.*` label)."""
    return any(key.startswith(PREFIX) for key in labels)


def parse_service_labels(service_name: str, labels: Mapping[str, str]) -> ServiceRouting | SetAside | None:
    """The typed routing of one service; `None` when it carries no `com.docker.lb.*` label.

    swarmgate's own routing labels (`OWN_LABELS`) are read only beside a `com.docker.lb.*` label."""
    if not is_routed(labels):
        return None
    ours = tuple(sorted((key, value) for key, value in labels.items()
                        if key.startswith((PREFIX, HEADER_PREFIX)) or key in _LABEL_NAMES))
    return _parse_labels(service_name, ours)


# Labels rarely change between passes, and each pass reads every service's labels more than once
# (per extension, and for unclaimed services): a result depends only on the name and the labels.
@functools.lru_cache(maxsize=1 << 16)
def _parse_labels(service_name: str, ours: tuple[tuple[str, str], ...]) -> ServiceRouting | SetAside:
    values: dict[str, object] = {}
    notices: list[str] = []
    headers = {key[len(HEADER_PREFIX):]: value for key, value in ours if key.startswith(HEADER_PREFIX)}
    for key, value in ours:  # sorted by key already (parse_service_labels)
        name = _LABEL_NAMES.get(key)
        if key.startswith(HEADER_PREFIX):
            continue
        if name is None:
            close = difflib.get_close_matches(key[len(PREFIX):], KNOWN_LABELS, n=1, cutoff=0.7)
            hint = f" (did you mean {PREFIX}{close[0]}?)" if close else ""
            notices.append(
                f"service {service_name}: label {shown(key)} is not known to swarmgate; ignored{hint}"
            )
            continue
        try:
            values[name] = _PARSERS[name](value)
        except LabelValueError as exc:
            return SetAside(service_name, f"label {key}: {exc}", kind=name)
    policy: dict[str, object] = {name: values.pop(name) for name in POLICY_LABELS if name in values}
    try:
        policies = build_policies(policy, parse_headers(headers, HEADER_PREFIX), OWN_PREFIX,
                                  redirects="redirects" in values)
    except PolicyLabelError as exc:
        return SetAside(service_name, str(exc), kind=exc.kind)
    routing = ServiceRouting(service=service_name, notices=tuple(notices), policies=policies,
                             **values)  # type: ignore[arg-type]
    problem = _missing(routing) or _https_problem(routing)
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


def _https_problem(r: ServiceRouting) -> tuple[ReasonKind, str] | None:
    """(kind, reason) when the HTTPS labels contradict each other: a label that completes another
    one, without it, is refused rather than ignored (as ssl_key without ssl_cert), since whoever
    wrote it expects a protection the route would not have."""
    if r.acme and (r.ssl_cert is not None or r.ssl_passthrough):
        given = f"{PREFIX}ssl_cert/ssl_key" if r.ssl_cert is not None else f"{PREFIX}ssl_passthrough"
        return "acme", (f"label {OWN_PREFIX}acme=true asks swarmgate for the certificates, and {given} "
                        "gives them another way: keep one of the two")
    # With ACME, the first certificate comes after the route exists: ssl_only waits for it (routes.py).
    if r.ssl_only and r.ssl_cert is None and not r.ssl_passthrough and not r.acme:
        return "ssl_only_without_tls", (
            f"label {PREFIX}ssl_only=true, but the service gives its hosts no HTTPS: add {PREFIX}ssl_cert and "
            f"{PREFIX}ssl_key (or {PREFIX}ssl_passthrough=true), or the redirect would lead nowhere")
    if r.ssl_backend_tls_verify is not None and not r.ssl_backend:
        return "ssl_backend_tls_verify", (f"label {PREFIX}ssl_backend_tls_verify needs "
                                          f"{PREFIX}ssl_backend=true (TLS to the tasks)")
    if r.ssl_backend_tls_verify == "required" and r.ssl_backend_ca is None:
        return "ssl_backend_ca", (f"label {PREFIX}ssl_backend_tls_verify=required needs {OWN_PREFIX}ssl_backend_ca: "
                                  "the Swarm secret holding the CA bundle the tasks' certificates are verified against")
    if r.ssl_backend_ca is not None and r.ssl_backend_tls_verify != "required":
        return "ssl_backend_ca", (f"label {OWN_PREFIX}ssl_backend_ca is used only with "
                                  f"{PREFIX}ssl_backend_tls_verify=required (the tasks would not be verified)")
    if r.ssl_backend and r.ssl_passthrough:
        return "ssl_backend", (f"label {PREFIX}ssl_backend: with {PREFIX}ssl_passthrough the proxy never "
                               "decrypts, so it cannot speak TLS to the tasks itself")
    for companion in ("hsts_subdomains", "hsts_preload"):
        if getattr(r, companion) and r.hsts is None:
            return companion, f"label {OWN_PREFIX}{companion} needs {OWN_PREFIX}hsts=<max-age> (such as 365d)"
    return None


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

"""Observed services → the route table of one extension (service cluster) (pure).

Rules, in the order they apply:

* **Cluster membership.** A service belongs to the extension whose `ServiceCluster` equals its
  `com.docker.lb.service_cluster` label; a missing label and a missing `ServiceCluster` both mean
  the empty cluster (Interlock's behaviour: services without the label are served by the extension
  without a cluster). Services of other clusters do not appear in this table at all.
* **Set aside.** Invalid labels, `backend_mode=vip` (needs overlay networks, which swarmgate does
  not use), `ssl_passthrough` (needs nginx's stream module) and a service that publishes no
  host-mode port for its `port` label are set aside with a reason; every other service is routed
  as if they did not exist.
* **Upstreams (host mode).** A task is an upstream when its desired and current state are both
  `running`, its node is `ready`, and it has a host-mode TCP binding whose target port equals the
  `port` label: `node address : published port`. Anything else is starting or draining.
* **Pooling.** Services that ask for the same host and path share one upstream pool (Interlock's
  canary pattern).
* **Conflicts.** When services on one host or one pool disagree on a setting (TLS cert/key,
  redirect, sticky cookie, ip_hash, context-root rewrite, default backend), the **oldest** service
  wins (Swarm `CreatedAt`, then name): a newly created service can never take over what an existing
  one configured. Every overruled setting is reported in `notices`.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from swarmgate.models.config import Extension
from swarmgate.models.labels import ServiceRouting, SetAside, parse_service_labels
from swarmgate.models.observed import ObservedState, Service
from swarmgate.models.route_types import HostRoute, PathRoute, RouteTable, TLSFiles, Upstream

__all__ = [
    "HostRoute",
    "PathRoute",
    "RouteTable",
    "SetAside",
    "TLSFiles",
    "Upstream",
    "build_route_table",
    "pool_name",
    "unclaimed_services",
]


def pool_name(host: str, path: str) -> str:
    """A stable nginx upstream name for one host and path: readable, and unique by its hash."""
    readable = re.sub(r"[^a-z0-9]+", "_", f"{host}{path}".lower()).strip("_")[:48]
    digest = hashlib.sha256(f"{host}\n{path}".encode()).hexdigest()[:8]
    return f"{readable}_{digest}"


def _age_key(service: Service) -> tuple[str, str]:
    # Go prints fractional seconds without trailing zeros; pad them so the strings sort by time.
    stamp = service.created_at
    match = re.match(r"^(.*?)(?:\.(\d+))?Z$", stamp)
    if match:
        stamp = f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}Z"
    return (stamp or "~", service.name)  # an unknown creation time sorts last (youngest)


@dataclass(frozen=True)
class _Routed:
    service: Service
    routing: ServiceRouting
    upstreams: tuple[Upstream, ...]


def _host_port_published(service: Service, port: int) -> bool:
    declared = (service.spec.get("EndpointSpec") or {}).get("Ports") or []
    return any(
        isinstance(p, dict) and p.get("TargetPort") == port and p.get("PublishMode") == "host"
        and p.get("Protocol", "tcp") == "tcp"
        for p in declared
    ) or any(p.target_port == port and p.mode == "host" for p in service.endpoint_ports)


def _upstreams(observed: ObservedState, service: Service, port: int) -> tuple[Upstream, ...]:
    found: dict[tuple[str, int], Upstream] = {}
    for task in observed.tasks_of(service.id):
        if task.desired_state != "running" or task.state != "running":
            continue
        node = observed.node(task.node_id)
        if node is None or node.state != "ready" or node.addr in ("", "0.0.0.0"):
            continue
        for binding in task.ports:
            if (binding.mode == "host" and binding.protocol == "tcp" and binding.target_port == port
                    and binding.published_port > 0):
                up = Upstream(address=node.addr, port=binding.published_port, task_id=task.id,
                              node_id=node.id, service=service.name)
                found.setdefault((up.address, up.port), up)
    return tuple(sorted(found.values(), key=lambda u: (u.address, u.port, u.task_id)))


def _classify(
    observed: ObservedState, ext: Extension
) -> tuple[list[_Routed], list[SetAside], list[str]]:
    routed: list[_Routed] = []
    aside: list[SetAside] = []
    notices: list[str] = []
    for service in sorted(observed.services, key=lambda s: s.name):
        parsed = parse_service_labels(service.name, service.labels)
        if parsed is None:
            continue
        cluster = service.labels.get("com.docker.lb.service_cluster", "")
        if isinstance(parsed, ServiceRouting):
            cluster = parsed.service_cluster
        if cluster != ext.service_cluster:
            continue
        if isinstance(parsed, SetAside):
            aside.append(parsed)
            continue
        notices.extend(parsed.notices)
        reason = _unsupported(parsed, service, ext)
        if reason:
            aside.append(SetAside(service.name, reason))
            continue
        if parsed.network is not None:
            notices.append(f"service {service.name}: label com.docker.lb.network is not used: "
                           "swarmgate routes to node address and host port")
        routed.append(_Routed(service, parsed, _upstreams(observed, service, parsed.port)))
    return routed, aside, notices


def _unsupported(r: ServiceRouting, service: Service, ext: Extension) -> str | None:
    if r.backend_mode == "vip":
        mode = "in host mode" if ext.publish_mode == "host" else "by swarmgate"
        return (f"label com.docker.lb.backend_mode=vip needs overlay networks, which are not used {mode}; "
                "use backend_mode=task (the default)")
    if r.ssl_passthrough:
        return "label com.docker.lb.ssl_passthrough=true is not supported (needs nginx's stream module)"
    if not _host_port_published(service, r.port):
        return (f"publishes no host-mode port for target port {r.port} "
                f"(add --publish mode=host,target={r.port})")
    return None


def _winner(kind: str, where: str, claims: Iterable[tuple[_Routed, object]], notices: list[str]) -> object:
    """The oldest service's value of one setting; every other value is reported as overruled."""
    ordered = sorted(claims, key=lambda c: _age_key(c[0].service))
    if not ordered:
        return None
    first, value = ordered[0]
    for other, other_value in ordered[1:]:
        if other_value != value:
            notices.append(f"{where}: {kind} of service {other.service.name} ({_said(other_value)}) "
                           f"overruled by older service {first.service.name} ({_said(value)})")
    return value


def _said(value: object) -> str:
    if value is None:
        return "not set"
    if isinstance(value, TLSFiles):
        return f"{value.cert}/{value.key}"
    return str(value)


def _path_route(host: str, path: str, members: list[tuple[_Routed, bool]], ext: Extension,
                notices: list[str]) -> PathRoute:
    where = f"host {host} path {path}"
    sticky = _winner("sticky_session_cookie", where,
                     [(m, m.routing.sticky_session_cookie) for m, _ in members], notices)
    ip_hash = _winner("ip_hash", where, [(m, m.routing.ip_hash) for m, _ in members], notices)
    # Only the context-root location itself (not a websocket endpoint below it) can strip its prefix.
    strip = _winner("context_root_rewrite", where,
                    [(m, m.routing.context_root if m.routing.context_root_rewrite and
                      _under(path, m.routing.context_root) else None) for m, _ in members], notices)
    services = tuple(sorted({m.service.name for m, _ in members}))
    upstreams = tuple(sorted({u for m, _ in members for u in m.upstreams},
                             key=lambda u: (u.address, u.port, u.task_id)))
    return PathRoute(
        path=path,
        pool=pool_name(host, path),
        services=services,
        upstreams=upstreams,
        strip_prefix=strip if isinstance(strip, str) and strip != "/" else None,
        websocket=any(ws for _, ws in members),
        sticky_cookie=sticky if isinstance(sticky, str) else None,
        ip_hash=bool(ip_hash) or (ext.config.ip_hash and sticky is None),
    )


def _under(path: str, root: str) -> bool:
    return root != "/" and (path == root or path.startswith(root + "/"))


def build_route_table(observed: ObservedState, ext: Extension) -> RouteTable:
    """The whole route table of one extension; every collection in it is sorted."""
    routed, aside, notices = _classify(observed, ext)
    by_path: dict[tuple[str, str], list[tuple[_Routed, bool]]] = defaultdict(list)
    redirect_hosts: dict[str, list[tuple[_Routed, str]]] = defaultdict(list)
    for item in routed:
        for host in item.routing.hosts:
            by_path[(host, item.routing.context_root)].append((item, False))
            for endpoint in item.routing.websocket_endpoints:
                by_path[(host, endpoint)].append((item, True))
        for source, target in item.routing.redirects:
            redirect_hosts[source].append((item, target))

    hosts: list[HostRoute] = []
    for host in sorted({h for h, _ in by_path} | set(redirect_hosts)):
        members = sorted({id(m): m for (h, _), ms in by_path.items() if h == host for m, _ in ms}.values(),
                         key=lambda m: m.service.name)
        tls = _winner("ssl_cert/ssl_key", f"host {host}",
                      [(m, TLSFiles(m.routing.ssl_cert, m.routing.ssl_key)) for m in members
                       if m.routing.ssl_cert and m.routing.ssl_key], notices)
        redirect = _winner("redirect", f"host {host}", redirect_hosts.get(host, []), notices)
        paths = tuple(
            _path_route(host, path, by_path[(host, path)], ext, notices)
            for (h, path) in sorted(by_path) if h == host
        )
        if redirect is not None and paths:
            notices.append(f"host {host}: redirected to {redirect}; its routes "
                           f"({', '.join(sorted({s for p in paths for s in p.services}))}) are not served")
        hosts.append(HostRoute(
            host=host,
            paths=() if redirect is not None else paths,
            tls=tls if isinstance(tls, TLSFiles) else None,
            redirect=redirect if isinstance(redirect, str) else None,
        ))

    defaults = [m for m in routed if m.routing.default_backend]
    default_backend = None
    if defaults:
        chosen = _winner("default_backend", "default backend",
                         [(m, m.service.name) for m in defaults], notices)
        winner = next(m for m in defaults if m.service.name == chosen)
        default_backend = _path_route("_default", "/", [(winner, False)], ext, notices)

    return RouteTable(
        cluster=ext.service_cluster,
        hosts=tuple(hosts),
        default_backend=default_backend,
        set_aside=tuple(sorted(aside, key=lambda s: s.service)),
        notices=tuple(sorted(set(notices))),
    )


def unclaimed_services(observed: ObservedState, clusters: Iterable[str]) -> tuple[SetAside, ...]:
    """Routed services whose service cluster no extension serves: nobody routes them, say so."""
    served = set(clusters)
    out = []
    for service in sorted(observed.services, key=lambda s: s.name):
        parsed = parse_service_labels(service.name, service.labels)
        if isinstance(parsed, ServiceRouting) and parsed.service_cluster not in served:
            out.append(SetAside(service.name, f"no extension serves service cluster {parsed.service_cluster!r}"
                                if parsed.service_cluster else
                                "no extension serves services without a service cluster "
                                "(every extension has a ServiceCluster)"))
    return tuple(out)

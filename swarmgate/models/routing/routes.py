"""Observed services → the route table of one extension (service cluster) (pure).

Rules, in the order they apply:

* **Cluster membership.** A service belongs to the extension whose `ServiceCluster` equals its
  `com.docker.lb.service_cluster` label; a missing (or empty) label and a missing `ServiceCluster`
  both mean the empty cluster (Interlock's behaviour: services without the label are served by the
  extension without a cluster). Services of other clusters do not appear in this table at all;
  `unclaimed_services` lists those no extension serves.
* **Set aside.** Invalid labels, `backend_mode=vip` (needs overlay networks, which swarmgate does
  not use), `ssl_passthrough` (needs nginx's stream module) and a service that publishes no
  host-mode port for its `port` label are set aside with a reason; every other service is routed
  as if they did not exist.
* **TLS secrets** (see `tls_secrets`): a service whose `ssl_cert`/`ssl_key` names a secret that
  does not exist, that swarmgate owns, or whose ID a proxy reported nginx cannot load, is set aside:
  every secret in the table is mounted into the proxy, and Swarm refuses the whole spec otherwise.
* **Upstreams (host mode).** A task is an upstream when its desired and current state are both
  `running`, its node is `ready`, and it has a host-mode TCP binding whose target port equals the
  `port` label: `node address : published port`. Anything else is starting or draining.
* **Pooling and conflicts** (see `route_merge`): services asking for the same host and path share
  a pool; where they disagree, the oldest service decides, and the overruled value is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from swarmgate.models.routing.label_values import LabelValueError, parse_swarm_name
from swarmgate.models.routing.labels import ReasonKind, ServiceRouting, SetAside, parse_service_labels
from swarmgate.models.routing.route_merge import Routed, default_backend, merge_hosts, pool_name
from swarmgate.models.routing.route_types import HostRoute, PathRoute, RouteTable, TLSFiles, Upstream
from swarmgate.models.routing.tls_secrets import secret_problem
from swarmgate.models.settings.config import Extension
from swarmgate.models.swarm.observed import ObservedState, Service

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


def _host_port_published(service: Service, port: int) -> bool:
    return any(
        p.target_port == port and p.mode == "host" and p.protocol == "tcp" for p in service.declared_ports
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
    observed: ObservedState, ext: Extension, unusable_secrets: Set[str]
) -> tuple[list[Routed], list[SetAside], list[str]]:
    secrets = {secret.name: secret for secret in observed.secrets}
    routed: list[Routed] = []
    aside: list[SetAside] = []
    notices: list[str] = []
    for service in sorted(observed.services, key=lambda s: s.name):
        parsed = parse_service_labels(service.name, service.labels)
        if parsed is None:
            continue
        if _cluster(service, parsed) != ext.service_cluster:
            continue
        if isinstance(parsed, SetAside):
            aside.append(parsed)
            continue
        notices.extend(parsed.notices)
        unsupported = _unsupported(parsed, service, ext) or secret_problem(parsed, secrets, unusable_secrets)
        if unsupported:
            aside.append(SetAside(service.name, unsupported[1], kind=unsupported[0]))
            continue
        if parsed.network is not None:
            notices.append(f"service {service.name}: label com.docker.lb.network is not used: "
                           "swarmgate routes to node address and host port")
        routed.append(Routed(service, parsed, _upstreams(observed, service, parsed.port)))
    return routed, aside, notices


def _cluster(service: Service, parsed: ServiceRouting | SetAside) -> str:
    if isinstance(parsed, ServiceRouting):
        return parsed.service_cluster
    # A set-aside service is still reported by its cluster's extension; one whose cluster label is
    # itself invalid by the extension without a cluster, so that its reason is seen somewhere.
    raw = service.labels.get("com.docker.lb.service_cluster", "")
    try:
        return parse_swarm_name(raw) if raw else ""
    except LabelValueError:
        return ""


def _unsupported(r: ServiceRouting, service: Service, ext: Extension) -> tuple[ReasonKind, str] | None:
    """(kind, reason) when valid labels ask for something swarmgate cannot do for this service."""
    if r.backend_mode == "vip":
        mode = "in host mode" if ext.publish_mode == "host" else "by swarmgate"
        return "vip_backend", (f"label com.docker.lb.backend_mode=vip needs overlay networks, which are not used "
                               f"{mode}; use backend_mode=task (the default)")
    if r.ssl_passthrough:
        return "ssl_passthrough", ("label com.docker.lb.ssl_passthrough=true is not supported "
                                   "(needs nginx's stream module)")
    if not _host_port_published(service, r.port):
        return "no_host_port", (f"publishes no host-mode port for target port {r.port} "
                                f"(add --publish mode=host,target={r.port})")
    return None


def build_route_table(
    observed: ObservedState, ext: Extension, *, unusable_secrets: Set[str] = frozenset()
) -> RouteTable:
    """The whole route table of one extension; every collection in it is sorted.

    `unusable_secrets` holds the IDs of Swarm secrets that a proxy's nginx could not load as a
    certificate or key (`tls_secrets.unusable_secret_ids` of its failed `nginx -t`): the services
    naming them are set aside with kind `unusable_secret`.
    """
    routed, aside, notices = _classify(observed, ext, unusable_secrets)
    return RouteTable(
        cluster=ext.service_cluster,
        hosts=merge_hosts(routed, ext, notices),
        default_backend=default_backend(routed, ext, notices),
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
                                "(every extension has a ServiceCluster)", kind="no_extension"))
    return tuple(out)

"""Observed services → the route table of one extension (service cluster) (pure).

Rules, in the order they apply:

* **Cluster membership.** A service belongs to the extension whose `ServiceCluster` equals its
  `com.docker.lb.service_cluster` label; a missing (or empty) label and a missing `ServiceCluster`
  both mean the empty cluster (Interlock's behaviour: services without the label are served by the
  extension without a cluster). Services of other clusters do not appear in this table at all;
  `unclaimed_services` lists those no extension serves.
* **Set aside.** Invalid labels, a service that neither publishes its `port` label in host mode
  nor is on an overlay network, and a network that cannot be chosen (named but not joined, or
  several and none named) are set aside with a reason;
  every other service is routed as if they did not exist.
* **Which way a service is reached.** Host mode (the seed's) when it publishes its `port` label in
  host mode and names no network and no VIP. Otherwise over an overlay network, Interlock's way:
  the network `com.docker.lb.network` names, or the service's only one. The proxy joins every such
  network (`RouteTable.networks`).
* **TLS secrets** (see `tls_secrets`): a service whose `ssl_cert`/`ssl_key` names a secret that
  does not exist, that swarmgate owns, or whose ID a proxy reported nginx cannot load, is set aside:
  every secret in the table is mounted into the proxy, and Swarm refuses the whole spec otherwise.
* **Upstreams (host mode).** A task is an upstream when its desired and current state are both
  `running`, its node is `ready`, and it has a host-mode TCP binding whose target port equals the
  `port` label: `node address : published port`, the publish's IPv4 binding (`Task.host_ports`:
  Docker lists an IPv6 twin whose port can differ). Anything else is starting or draining.
* **A service's last tasks are not dropped before they stop.** Swarm sets a task's desired state to
  `shutdown` a moment (about a second on the lab) before its container gets the stop signal. A
  task Swarm is stopping is left out as soon as the service has another upstream, so nginx never
  picks it; but when it has none (one task, rolled stop-first; a scale to 0), the tasks still
  `running` stay its upstreams until they stop: they answer until then, where dropping them would
  turn the route into a 503 at once. (Swarm empties such a task's `PortStatus`; the operator fills
  in the host ports it saw: models/swarm/port_memory.py.)
* **Upstreams (overlay).** Task mode (`backend_mode=task`, or Interlock's `default`): each such
  task's address on the network and the `port` label. `backend_mode=vip`: the service's virtual IP
  on the network, one upstream; Swarm's IPVS balances behind it.
* **SSL passthrough.** A service with `ssl_passthrough=true` is routed by SNI on the TLS port, its
  connections untouched (`RouteTable.passthrough`), never through the http servers.
* **Pooling and conflicts** (see `route_merge`): services asking for the same host and path share
  a pool; where they disagree, the oldest service decides, and the overruled value is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from swarmgate.models.routing.acme_hosts import NO_ACME, AcmeRouting, acme_problem
from swarmgate.models.routing.backend_ca import ca_problem
from swarmgate.models.routing.label_values import LabelValueError, parse_swarm_name, shown
from swarmgate.models.routing.labels import PREFIX, ReasonKind, ServiceRouting, SetAside, parse_service_labels
from swarmgate.models.routing.policy_checks import policy_problem
from swarmgate.models.routing.route_merge import Routed, default_backend, merge_hosts, pool_name
from swarmgate.models.routing.route_types import (
    HostRoute,
    PassthroughRoute,
    PathRoute,
    RouteTable,
    TLSFiles,
    Upstream,
)
from swarmgate.models.routing.tls_secrets import secret_problem
from swarmgate.models.settings.extension import Extension
from swarmgate.models.settings.nginx_syntax import added_headers
from swarmgate.models.swarm.nodes import Node
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.services import Service
from swarmgate.models.swarm.tasks import Task

__all__ = [
    "HostRoute",
    "PassthroughRoute",
    "PathRoute",
    "RouteTable",
    "SetAside",
    "TLSFiles",
    "Upstream",
    "build_route_table",
    "pool_name",
    "unclaimed_services",
]


CLUSTER_LABEL = f"{PREFIX}service_cluster"


def _host_port_published(service: Service, port: int) -> bool:
    return any(
        p.target_port == port and p.mode == "host" and p.protocol == "tcp" for p in service.declared_ports
    ) or any(p.target_port == port and p.mode == "host" for p in service.endpoint_ports)


def _overlay_upstreams(observed: ObservedState, service: Service, r: ServiceRouting,
                       network_id: str) -> tuple[Upstream, ...]:
    """Task mode: each running task's address on the network; vip mode: the service's one VIP there."""
    if r.backend_mode == "vip":
        vip = service.virtual_ip_on(network_id)
        return () if vip is None else (Upstream(address=vip, port=r.port, task_id="vip", node_id="",
                                                 service=service.name),)
    found: tuple[dict[str, Upstream], dict[str, Upstream]] = ({}, {})
    for task, node, stopping in _serving_tasks(observed, service):
        for address in task.addresses_on(network_id)[:1]:
            found[stopping].setdefault(address, Upstream(address=address, port=r.port, task_id=task.id,
                                                         node_id=node.id, service=service.name, overlay=True))
    return tuple(sorted((found[0] or found[1]).values(), key=lambda u: (u.address, u.task_id)))


def _serving_tasks(observed: ObservedState, service: Service) -> Iterable[tuple[Task, Node, bool]]:
    """The service's tasks that run on a ready node, each with whether Swarm is stopping it (desired
    state no longer `running`: the container gets its stop signal a moment later)."""
    for task in observed.tasks_of(service.id):
        if task.state != "running":
            continue
        node = observed.node(task.node_id)
        if node is None or node.state != "ready":
            continue
        yield task, node, task.desired_state != "running"


def _network(observed: ObservedState, service: Service,
             r: ServiceRouting) -> str | tuple[ReasonKind, str] | None:
    """The overlay network (ID) the service is routed on; None for host mode; else (kind, reason).

    Host mode (the seed's) is kept for a service that publishes its port in host mode and names no
    network and no VIP. Otherwise the network is the one `com.docker.lb.network` names, or the
    service's only overlay network, as Interlock chose it.
    """
    if r.network is None and r.backend_mode == "task" and _host_port_published(service, r.port):
        return None
    joined = [n for n in (observed.network(t) for t in service.networks) if n is not None and n.joinable]
    if r.network is not None:
        wanted = observed.network(r.network)
        if wanted is None or not wanted.joinable:
            return "network", f"label {PREFIX}network: no overlay network named {shown(r.network)}"
        if wanted.id not in {n.id for n in joined}:
            return "network", (f"label {PREFIX}network names {wanted.name}, which the service is not on "
                               f"(add --network {wanted.name})")
        return wanted.id
    if len(joined) == 1:
        return joined[0].id
    if len(joined) > 1:
        names = ", ".join(sorted(n.name for n in joined))
        return "network", f"is on several overlay networks ({names}): say which in {PREFIX}network"
    if r.backend_mode == "vip":
        return "vip_backend", (f"label {PREFIX}backend_mode=vip needs the service on an overlay network "
                               f"(add --network NET)")
    return "no_host_port", (f"publishes no host-mode port for target port {r.port} and is on no overlay network "
                            f"(add --network NET, or --publish mode=host,target={r.port})")


def _upstreams(observed: ObservedState, service: Service, port: int) -> tuple[Upstream, ...]:
    found: tuple[dict[tuple[str, int], Upstream], dict[tuple[str, int], Upstream]] = ({}, {})
    publishes = sum(1 for p in service.declared_ports
                    if p.target_port == port and p.mode == "host" and p.protocol == "tcp")
    for task, node, stopping in _serving_tasks(observed, service):
        address = node.addr
        if address in ("", "0.0.0.0"):
            continue
        kept = found[stopping]
        for published in task.host_ports(port, publishes):
            if (address, published) not in kept:  # the first task seen at an address and port keeps it
                kept[(address, published)] = Upstream(address=address, port=published, task_id=task.id,
                                                      node_id=node.id, service=service.name)
    chosen = found[0] or found[1]
    if len(chosen) < 2:
        return tuple(chosen.values())
    return tuple(sorted(chosen.values(), key=lambda u: (u.address, u.port, u.task_id)))


def _classify(
    observed: ObservedState, ext: Extension, unusable_secrets: Set[str], undelivered_secrets: Set[str],
    acme: AcmeRouting,
) -> tuple[list[Routed], list[SetAside], list[str], set[str]]:
    secrets = {secret.name: secret for secret in observed.secrets}
    configs = {config.name: config for config in observed.configs}
    global_headers = {name for name, _ in added_headers(ext.config.http_options)}
    networks: set[str] = set()
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
        network = _network(observed, service, parsed)
        refused = acme_problem(parsed, acme)
        unsupported = ((network if isinstance(network, tuple) else None)
                       or (("acme", refused) if refused else None)
                       or secret_problem(parsed, secrets, unusable_secrets, undelivered_secrets)
                       or ca_problem(parsed, secrets, unusable_secrets, undelivered_secrets))
        checked = unsupported or policy_problem(parsed, secrets=secrets, configs=configs, global_headers=global_headers,
                                                unusable=unusable_secrets, undelivered=undelivered_secrets)
        if isinstance(checked, tuple):
            aside.append(SetAside(service.name, checked[1], kind=checked[0]))
            continue
        parsed = checked
        if isinstance(network, str):
            networks.add(network)
            upstreams = _overlay_upstreams(observed, service, parsed, network)
        else:
            upstreams = _upstreams(observed, service, parsed.port)
        routed.append(Routed(service, parsed, upstreams))
    return routed, aside, notices, networks


def _cluster(service: Service, parsed: ServiceRouting | SetAside) -> str:
    if isinstance(parsed, ServiceRouting):
        return parsed.service_cluster
    # A set-aside service is still reported by its cluster's extension; one whose cluster label is
    # itself invalid by the extension without a cluster, so that its reason is seen somewhere.
    raw = service.labels.get(CLUSTER_LABEL, "")
    try:
        return parse_swarm_name(raw) if raw else ""
    except LabelValueError:
        return ""


def _passthrough_routes(
    routed: list[Routed], terminated: Set[str], notices: list[str]
) -> tuple[PassthroughRoute, ...]:
    """One SNI route per passthrough host; services sharing a host are pooled (the canary pattern).

    The TLS port reads the SNI before anything else, so a passthrough host takes its TLS connections
    from any service that would terminate TLS for the same name: said in a notice.
    """
    by_host: dict[str, list[Routed]] = {}
    for r in routed:
        for host in r.routing.hosts:
            by_host.setdefault(host, []).append(r)
    out = []
    for host, members in sorted(by_host.items()):
        names = tuple(sorted(m.routing.service for m in members))
        ups = {(u.address, u.port): u for m in members for u in m.upstreams}
        if host in terminated:
            notices.append(f"host {host}: TLS is passed through to {', '.join(names)}; the certificate "
                           "other services give it is not used")
        out.append(PassthroughRoute(host=host, pool=pool_name(host, ":tls"), services=names,
                                    upstreams=tuple(ups[k] for k in sorted(ups))))
    return tuple(out)


def _passthrough_ssl_only(passthrough: list[Routed], hosts: tuple[HostRoute, ...]) -> tuple[HostRoute, ...]:
    """The http side of passthrough hosts labelled ssl_only: a server that only redirects to HTTPS.

    A passthrough host has no http route of its own; one that another service also routes over
    plain HTTP keeps that route (its own labels decide about ssl_only there)."""
    taken = {h.host for h in hosts}
    wanted = sorted({host for r in passthrough if r.routing.ssl_only for host in r.routing.hosts} - taken)
    if not wanted:
        return hosts
    return tuple(sorted([*hosts, *(HostRoute(host=h, paths=(), ssl_only=True) for h in wanted)],
                        key=lambda h: h.host))


def build_route_table(
    observed: ObservedState, ext: Extension, *, unusable_secrets: Set[str] = frozenset(),
    undelivered_secrets: Set[str] = frozenset(), acme: AcmeRouting = NO_ACME,
) -> RouteTable:
    """The whole route table of one extension; every collection in it is sorted.

    `unusable_secrets` holds the IDs of Swarm secrets that a proxy's nginx could not load as a
    certificate or key (`tls_secrets.unusable_secret_ids` of its failed `nginx -t`): the services
    naming them are set aside with kind `unusable_secret`; `undelivered_secrets` (IDs whose courier
    file a proxy waited for in vain) with kind `undelivered_secret`. `acme`: whether ACME is
    configured, and the certificate secret to serve per host of services labelled `swarmgate.acme=true`.
    """
    routed, aside, notices, networks = _classify(observed, ext, unusable_secrets, undelivered_secrets, acme)
    passthrough = [r for r in routed if r.routing.ssl_passthrough]
    hosts = merge_hosts([r for r in routed if not r.routing.ssl_passthrough], ext, notices, acme.certs)
    hosts = _passthrough_ssl_only(passthrough, hosts)
    return RouteTable(
        cluster=ext.service_cluster,
        networks=tuple(sorted(networks)),
        passthrough=_passthrough_routes(passthrough, {h.host for h in hosts if h.tls}, notices),
        hosts=hosts,
        default_backend=default_backend(routed, ext, notices),
        set_aside=tuple(sorted(aside, key=lambda s: s.service)),
        notices=tuple(sorted(set(notices))),
    )


def unclaimed_services(observed: ObservedState, clusters: Iterable[str]) -> tuple[SetAside, ...]:
    """Routed services whose service cluster no extension serves: nobody routes them, say so."""
    served = set(clusters)
    # No (or an empty) cluster label: the empty cluster; when that one is served, no labels to read again.
    empty_served = "" in served
    out = []
    for service in sorted(observed.services, key=lambda s: s.name):
        if empty_served and not service.labels.get(CLUSTER_LABEL):
            continue
        parsed = parse_service_labels(service.name, service.labels)
        if isinstance(parsed, ServiceRouting) and parsed.service_cluster not in served:
            out.append(SetAside(service.name, f"no extension serves service cluster {parsed.service_cluster!r}"
                                if parsed.service_cluster else
                                "no extension serves services without a service cluster "
                                "(every extension has a ServiceCluster)", kind="no_extension"))
    return tuple(out)

"""A frozen snapshot of the Swarm, built from the Docker Engine API's own JSON (pure).

`ObservedState.from_api` takes exactly what `GET /services`, `/tasks`, `/nodes`, `/configs`,
`/secrets` and `/networks` return (API 1.41), so the operator's live pass and an offline state file go through the
same code. Only the fields swarmgate reasons about are lifted into typed attributes; the raw service
`Spec` is kept whole because the planner compares it. Shape errors raise `ConfigError` with the path
of the offending value (`tasks[3].Status: expected an object`).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmgate.errors import DocumentError


@dataclass(frozen=True)
class PortBinding:
    target_port: int
    published_port: int
    protocol: str
    mode: str


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    addr: str
    role: str
    availability: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkAttachment:
    """A task's place on one network (`Task.NetworksAttachments[]`): the network and the task's
    addresses on it, without the prefix length (`198.19.1.3/24` → `198.19.1.3`)."""

    network_id: str
    network_name: str
    addresses: tuple[str, ...]
    ingress: bool = False  # the routing mesh's network, which no service joins by name


@dataclass(frozen=True)
class VirtualIP:
    """A service's virtual IP on one network (`Endpoint.VirtualIPs[]`), without the prefix length."""

    network_id: str
    address: str


@dataclass(frozen=True)
class Task:
    id: str
    service_id: str
    node_id: str
    slot: int | None
    desired_state: str
    state: str
    container_id: str | None
    ports: tuple[PortBinding, ...] = ()
    networks: tuple[NetworkAttachment, ...] = ()  # NetworksAttachments, sorted by network ID
    # The task's Spec: the service's TaskTemplate when Swarm made the task. A task that failed under
    # the template an update brought is what is left of that update once Swarm rolled it back.
    template: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "rejected")

    def host_ports(self, target: int, publishes: int = 1) -> tuple[int, ...]:
        """The host ports a host-mode TCP publish of `target` answers on at the node's IPv4 address.

        Docker 20.10 binds each host-mode publish twice, IPv4 then IPv6, and `PortStatus` lists both
        in that order without saying which is which. Their ports are allocated apart: when the IPv4
        one is taken (by anything on the node) they differ, and the IPv6 port on the IPv4 address
        reaches whatever holds it there, or nothing (the lab test puts another backend there). So of
        twice `publishes` entries, every other one from the first is taken; of any other count, the
        first `publishes` (fewer upstreams is the safe side of not knowing). `publishes` is how many
        times the service's spec publishes `target` in host mode."""
        listed = [b.published_port for b in self.ports
                  if b.mode == "host" and b.protocol == "tcp" and b.target_port == target and b.published_port > 0]
        publishes = max(publishes, 1)
        chosen = listed[0::2] if len(listed) == 2 * publishes else listed[:publishes]
        return tuple(dict.fromkeys(chosen))

    def addresses_on(self, network_id: str) -> tuple[str, ...]:
        """The task's addresses on one network (none when it is not attached to it)."""
        return next((a.addresses for a in self.networks if a.network_id == network_id), ())


# UpdateStatus.State values (Engine API 1.41): the update or the rollback Swarm runs, or ran last.
ROLLBACK_STATES = frozenset({"rollback_started", "rollback_paused", "rollback_completed"})
PAUSED_STATES = frozenset({"paused", "rollback_paused"})


@dataclass(frozen=True)
class UpdateStatus:
    """A service's `UpdateStatus`: `state` is updating, paused, completed or rollback_*."""

    state: str
    message: str = ""
    started_at: str = ""
    completed_at: str = ""

    @property
    def rolled_back(self) -> bool:
        """Swarm rolled (or is rolling) the service back from the spec it was given last."""
        return self.state in ROLLBACK_STATES

    @property
    def paused(self) -> bool:
        return self.state in PAUSED_STATES


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    endpoint_ports: tuple[PortBinding, ...] = ()
    created_at: str = ""
    # What swarmgate reads from a service's Spec, lifted here so no other module digs into the raw
    # dict (the planner still diffs `spec` whole, for the proxy service it owns).
    env: tuple[str, ...] = ()  # Spec.TaskTemplate.ContainerSpec.Env, as given
    constraints: tuple[str, ...] = ()  # Spec.TaskTemplate.Placement.Constraints
    config_names: tuple[str, ...] = ()  # Spec.TaskTemplate.ContainerSpec.Configs[].ConfigName
    declared_ports: tuple[PortBinding, ...] = ()  # Spec.EndpointSpec.Ports (what was asked for)
    # Spec.TaskTemplate.Networks[].Target: network IDs (the daemon resolves names), in spec order
    networks: tuple[str, ...] = ()
    virtual_ips: tuple[VirtualIP, ...] = ()  # Endpoint.VirtualIPs (ingress included)
    update: UpdateStatus | None = None  # UpdateStatus: how Swarm's last update or rollback went
    previous_spec: Mapping[str, Any] | None = None  # PreviousSpec: what an update replaced (absent after
    # Swarm's own rollback: swarmkit then moves PreviousSpec back into Spec and clears it)

    def virtual_ip_on(self, network_id: str) -> str | None:
        return next((v.address for v in self.virtual_ips if v.network_id == network_id), None)

    def env_value(self, name: str) -> str | None:
        """The value of one `NAME=value` entry of the container's environment (the first one)."""
        return next((item.split("=", 1)[1] for item in self.env if item.startswith(name + "=")), None)


@dataclass(frozen=True)
class SwarmConfig:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]
    data: bytes


@dataclass(frozen=True)
class SwarmNetwork:
    """One network as `GET /networks` lists it; only swarm-scoped overlays can carry routes."""

    id: str
    name: str
    driver: str
    scope: str
    ingress: bool = False

    @property
    def joinable(self) -> bool:
        """A service may join it: an overlay of the Swarm, not the routing mesh's own network."""
        return self.driver == "overlay" and self.scope == "swarm" and not self.ingress


@dataclass(frozen=True)
class SwarmSecret:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]


class _Reader:
    """Typed access to one JSON object, naming the path of whatever is missing or mistyped.

    A path is formatted only when a message needs it: a snapshot of 10,000 services reads some
    200,000 objects, and formatting each one's path cost more than reading it."""

    __slots__ = ("_key", "_parent", "_where", "obj")

    def __init__(self, obj: object, where: str) -> None:
        if not isinstance(obj, dict):
            raise DocumentError(f"{where}: expected an object, got {type(obj).__name__}")
        self.obj: dict[str, Any] = obj
        self._where: str | None = where
        self._parent: _Reader | None = None
        self._key = ""

    @property
    def where(self) -> str:
        if self._where is None:
            assert self._parent is not None
            self._where = f"{self._parent.where}.{self._key}"
        return self._where

    def sub(self, key: str) -> _Reader:
        value = self.obj.get(key)
        if value is None:
            value = {}
        elif not isinstance(value, dict):
            raise DocumentError(f"{self.where}.{key}: expected an object, got {type(value).__name__}")
        child = _Reader.__new__(_Reader)
        child.obj, child._where, child._parent, child._key = value, None, self, key
        return child

    def text(self, key: str, default: str | None = None) -> str:
        value = self.obj.get(key, default)
        if not isinstance(value, str):
            raise DocumentError(f"{self.where}.{key}: expected a string, got {value!r}")
        return value

    def number(self, key: str, default: int | None = None) -> int:
        value = self.obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise DocumentError(f"{self.where}.{key}: expected an integer, got {value!r}")
        return value

    def labels(self, key: str = "Labels") -> dict[str, str]:
        value = self.obj.get(key) or {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise DocumentError(f"{self.where}.{key}: expected an object of strings")
        return dict(sorted(value.items()))

    def items(self, key: str) -> list[Any]:
        value = self.obj.get(key) or []
        if not isinstance(value, list):
            raise DocumentError(f"{self.where}.{key}: expected a list")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.items(key)
        if not all(isinstance(item, str) for item in value):
            raise DocumentError(f"{self.where}.{key}: expected a list of strings")
        return tuple(value)


def _ports(raw: list[Any], where: str) -> tuple[PortBinding, ...]:
    """A service's ports, each once (Docker 20.10 lists each host-mode port twice), sorted."""
    seen = dict.fromkeys(_port_keys(raw, where))
    return tuple(_binding(*key) for key in sorted(seen)) if len(seen) > 1 else tuple(_binding(*k) for k in seen)


def _task_ports(raw: list[Any], where: str) -> tuple[PortBinding, ...]:
    """A task's `PortStatus`, every entry in Swarm's order: that order is how the IPv4 binding of a
    host-mode publish is told from its IPv6 one (`Task.host_ports`), so nothing is merged or sorted."""
    return tuple(_binding(*key) for key in _port_keys(raw, where))


def _port_keys(raw: list[Any], where: str) -> Iterator[tuple[int, int, str, str]]:
    for i, item in enumerate(raw):
        key = _port_key(item)
        if key is None:  # not the usual shape: read it again, naming what is wrong
            r = _Reader(item, f"{where}[{i}]")
            key = (r.number("TargetPort"), r.number("PublishedPort", 0), r.text("Protocol", "tcp"),
                   r.text("PublishMode", "ingress"))
        yield key


def _port_key(item: object) -> tuple[int, int, str, str] | None:
    """(target, published, protocol, mode) of a well-formed binding, else None."""
    if type(item) is not dict:
        return None
    target, published = item.get("TargetPort"), item.get("PublishedPort", 0)
    protocol, mode = item.get("Protocol", "tcp"), item.get("PublishMode", "ingress")
    if type(target) is int and type(published) is int and type(protocol) is str and type(mode) is str:
        return target, published, protocol, mode
    return None


@functools.lru_cache(maxsize=65536)
def _binding(target: int, published: int, protocol: str, mode: str) -> PortBinding:
    # Bindings are values: tasks that share one share the object (30,000 tasks, a few ports each).
    return PortBinding(target_port=target, published_port=published, protocol=protocol, mode=mode)


def _address(cidr: object, where: str) -> str:
    if not isinstance(cidr, str) or not cidr:
        raise DocumentError(f"{where}: expected an address, got {cidr!r}")
    return cidr.split("/", 1)[0]


def _attachments(r: _Reader) -> tuple[NetworkAttachment, ...]:
    out = []
    for i, item in enumerate(r.items("NetworksAttachments")):
        att = _Reader(item, f"{r.where}.NetworksAttachments[{i}]")
        network = att.sub("Network")
        spec = network.sub("Spec")
        out.append(NetworkAttachment(
            network_id=network.text("ID"),
            network_name=spec.text("Name", ""),
            addresses=tuple(_address(a, f"{att.where}.Addresses") for a in att.items("Addresses")),
            ingress=spec.obj.get("Ingress") is True,
        ))
    return tuple(sorted(out, key=lambda a: a.network_id))


def _virtual_ips(r: _Reader) -> tuple[VirtualIP, ...]:
    out = []
    for i, item in enumerate(r.items("VirtualIPs")):
        vip = _Reader(item, f"{r.where}.VirtualIPs[{i}]")
        if vip.obj.get("Addr"):  # a network still being allocated lists its VIP without an address
            out.append(VirtualIP(network_id=vip.text("NetworkID"), address=_address(vip.obj["Addr"], vip.where)))
    return tuple(sorted(out, key=lambda v: v.network_id))


def _node(r: _Reader) -> Node:
    spec, status = r.sub("Spec"), r.sub("Status")
    addr = status.text("Addr", "")
    # Managers may report 0.0.0.0 here; their manager address carries the real one (host:2377).
    if addr in ("", "0.0.0.0"):
        manager_addr = r.sub("ManagerStatus").text("Addr", "")
        addr = manager_addr.rsplit(":", 1)[0] if manager_addr else addr
    return Node(
        id=r.text("ID"),
        hostname=r.sub("Description").text("Hostname", ""),
        addr=addr,
        role=spec.text("Role", "worker"),
        availability=spec.text("Availability", "active"),
        state=status.text("State", "unknown"),
        labels=spec.labels(),
    )


def _task(r: _Reader) -> Task:
    status = r.sub("Status")
    slot = r.obj.get("Slot")
    container = status.sub("ContainerStatus").obj.get("ContainerID")
    return Task(
        id=r.text("ID"),
        service_id=r.text("ServiceID"),
        node_id=r.text("NodeID", ""),
        slot=slot if isinstance(slot, int) and not isinstance(slot, bool) else None,
        desired_state=r.text("DesiredState", ""),
        state=status.text("State", ""),
        container_id=container if isinstance(container, str) and container else None,
        ports=_task_ports(status.sub("PortStatus").items("Ports"), f"{r.where}.Status.PortStatus.Ports"),
        networks=_attachments(r),
        template=r.sub("Spec").obj if r.obj.get("Spec") is not None else None,
    )


def _service(r: _Reader) -> Service:
    spec = r.sub("Spec")
    template = spec.sub("TaskTemplate")
    container = template.sub("ContainerSpec")
    configs = container.items("Configs")
    return Service(
        id=r.text("ID"),
        name=spec.text("Name"),
        version=r.sub("Version").number("Index", 0),
        labels=spec.labels(),
        spec=spec.obj,
        endpoint_ports=_ports(r.sub("Endpoint").items("Ports"), f"{r.where}.Endpoint.Ports"),
        created_at=r.text("CreatedAt", ""),
        env=container.strings("Env"),
        constraints=template.sub("Placement").strings("Constraints"),
        config_names=tuple(_Reader(ref, f"{container.where}.Configs[{i}]").text("ConfigName", "")
                           for i, ref in enumerate(configs)),
        declared_ports=_ports(spec.sub("EndpointSpec").items("Ports"), f"{spec.where}.EndpointSpec.Ports"),
        networks=tuple(_Reader(ref, f"{template.where}.Networks[{i}]").text("Target")
                       for i, ref in enumerate(template.items("Networks"))),
        virtual_ips=_virtual_ips(r.sub("Endpoint")),
        update=_update_status(r),
        previous_spec=r.sub("PreviousSpec").obj if r.obj.get("PreviousSpec") is not None else None,
    )


def _update_status(r: _Reader) -> UpdateStatus | None:
    if r.obj.get("UpdateStatus") is None:
        return None
    status = r.sub("UpdateStatus")
    return UpdateStatus(state=status.text("State", ""), message=status.text("Message", ""),
                        started_at=status.text("StartedAt", ""), completed_at=status.text("CompletedAt", ""))


def _config(r: _Reader) -> SwarmConfig:
    spec = r.sub("Spec")
    try:
        data = base64.b64decode(spec.text("Data", ""), validate=True)
    except binascii.Error:
        raise DocumentError(f"{spec.where}.Data: expected base64") from None
    return SwarmConfig(
        id=r.text("ID"), name=spec.text("Name"), version=r.sub("Version").number("Index", 0),
        labels=spec.labels(), data=data,
    )


def _network(r: _Reader) -> SwarmNetwork:
    # /networks is the one list whose objects carry no Spec: Id and Name sit at the top.
    return SwarmNetwork(id=r.text("Id"), name=r.text("Name"), driver=r.text("Driver", ""),
                        scope=r.text("Scope", ""), ingress=r.obj.get("Ingress") is True)


def _secret(r: _Reader) -> SwarmSecret:
    spec = r.sub("Spec")
    return SwarmSecret(id=r.text("ID"), name=spec.text("Name"), version=r.sub("Version").number("Index", 0),
                       labels=spec.labels())


@dataclass(frozen=True)
class ObservedState:
    """Everything one reconcile pass knows about the Swarm, each collection sorted by ID."""

    services: tuple[Service, ...] = ()
    tasks: tuple[Task, ...] = ()
    nodes: tuple[Node, ...] = ()
    configs: tuple[SwarmConfig, ...] = ()
    secrets: tuple[SwarmSecret, ...] = ()
    networks: tuple[SwarmNetwork, ...] = ()

    @classmethod
    def from_api(
        cls,
        *,
        services: Iterable[Any],
        tasks: Iterable[Any],
        nodes: Iterable[Any],
        configs: Iterable[Any] = (),
        secrets: Iterable[Any] = (),
        networks: Iterable[Any] = (),
    ) -> ObservedState:
        def each(kind: str, items: Iterable[Any]) -> list[_Reader]:
            return [_Reader(item, f"{kind}[{i}]") for i, item in enumerate(items)]

        return cls(
            services=tuple(sorted((_service(r) for r in each("services", services)), key=lambda s: s.id)),
            tasks=tuple(sorted((_task(r) for r in each("tasks", tasks)), key=lambda t: t.id)),
            nodes=tuple(sorted((_node(r) for r in each("nodes", nodes)), key=lambda n: n.id)),
            configs=tuple(sorted((_config(r) for r in each("configs", configs)), key=lambda c: c.id)),
            secrets=tuple(sorted((_secret(r) for r in each("secrets", secrets)), key=lambda s: s.id)),
            networks=tuple(sorted((_network(r) for r in each("networks", networks)), key=lambda n: n.id)),
        )

    # Lookups are indexed once per snapshot: a scan per service would make a pass quadratic in the
    # Swarm's size (1000 services: 150 ms of a 180 ms pass before the index).
    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    @functools.cached_property
    def _tasks_by_service(self) -> dict[str, tuple[Task, ...]]:
        grouped: dict[str, list[Task]] = {}
        for task in self.tasks:
            grouped.setdefault(task.service_id, []).append(task)
        return {service_id: tuple(tasks) for service_id, tasks in grouped.items()}

    def node(self, node_id: str) -> Node | None:
        return self._nodes_by_id.get(node_id)

    def service_named(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def tasks_of(self, service_id: str) -> tuple[Task, ...]:
        return self._tasks_by_service.get(service_id, ())

    def config_named(self, name: str) -> SwarmConfig | None:
        return next((c for c in self.configs if c.name == name), None)

    def network(self, name_or_id: str) -> SwarmNetwork | None:
        """A network by ID or by name, as `docker service create --network` takes either."""
        return self._networks_by_id.get(name_or_id) or self._networks_by_name.get(name_or_id)

    @functools.cached_property
    def _networks_by_id(self) -> dict[str, SwarmNetwork]:
        return {n.id: n for n in self.networks}

    @functools.cached_property
    def _networks_by_name(self) -> dict[str, SwarmNetwork]:
        # Names are unique among swarm-scoped networks; a node-local one of the same name comes second.
        out: dict[str, SwarmNetwork] = {}
        for n in sorted(self.networks, key=lambda n: (n.scope != "swarm", n.id)):
            out.setdefault(n.name, n)
        return out

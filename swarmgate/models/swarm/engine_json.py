"""Docker Engine API JSON → the snapshot's types (pure).

Each reader takes exactly what `GET /services`, `/tasks`, `/nodes`, `/configs`, `/secrets` or
`/networks` returns (API 1.41), so the operator's live pass and an offline state file go through the
same code. Only the fields swarmgate reasons about are lifted into typed attributes; the raw service
`Spec` is kept whole because the planner compares it. Shape errors raise `DocumentError` with the
path of the offending value (`tasks[3].Status: expected an object`).
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from swarmgate.errors import DocumentError
from swarmgate.models.swarm.nodes import Node
from swarmgate.models.swarm.objects import SwarmConfig, SwarmNetwork, SwarmSecret
from swarmgate.models.swarm.ports import PortBinding
from swarmgate.models.swarm.service_json import well_formed_service
from swarmgate.models.swarm.services import Service, UpdateStatus, VirtualIP
from swarmgate.models.swarm.task_json import binding, port_key, well_formed_task
from swarmgate.models.swarm.tasks import NetworkAttachment, Task


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
    return tuple(binding(*key) for key in sorted(seen)) if len(seen) > 1 else tuple(binding(*k) for k in seen)


def _task_ports(raw: list[Any], where: str) -> tuple[PortBinding, ...]:
    """A task's `PortStatus`, every entry in Swarm's order: that order is how the IPv4 binding of a
    host-mode publish is told from its IPv6 one (`Task.host_ports`), so nothing is merged or sorted."""
    return tuple(binding(*key) for key in _port_keys(raw, where))


def _port_keys(raw: list[Any], where: str) -> Iterator[tuple[int, int, str, str]]:
    for i, item in enumerate(raw):
        key = port_key(item)
        if key is None:  # not the usual shape: read it again, naming what is wrong
            r = _Reader(item, f"{where}[{i}]")
            key = (r.number("TargetPort"), r.number("PublishedPort", 0), r.text("Protocol", "tcp"),
                   r.text("PublishMode", "ingress"))
        yield key


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
    return well_formed_task(r.obj) or task_fields(r)


def task_fields(r: _Reader) -> Task:
    """A task read field by field, naming the path of any value of the wrong type."""
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
    return well_formed_service(r.obj) or service_fields(r)


def service_fields(r: _Reader) -> Service:
    """A service read field by field, naming the path of any value of the wrong type."""
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


# One function per API list; each returns its objects sorted by ID, the snapshot's order.
def _each(kind: str, items: Iterable[Any]) -> list[_Reader]:
    return [_Reader(item, f"{kind}[{i}]") for i, item in enumerate(items)]


def services_from_api(items: Iterable[Any]) -> tuple[Service, ...]:
    listed = list(items)
    if not all(type(item) is dict for item in listed):  # the error names the first that is not an object
        return tuple(sorted((_service(r) for r in _each("services", listed)), key=_BY_ID))
    # A _Reader (and its path) only for a service of an unusual shape, to name what is wrong in it.
    return tuple(sorted((well_formed_service(item) or service_fields(_Reader(item, f"services[{i}]"))
                         for i, item in enumerate(listed)), key=_BY_ID))


def tasks_from_api(items: Iterable[Any]) -> tuple[Task, ...]:
    listed = list(items)
    if not all(type(item) is dict for item in listed):
        return tuple(sorted((_task(r) for r in _each("tasks", listed)), key=_BY_ID))
    return tuple(sorted((well_formed_task(item) or task_fields(_Reader(item, f"tasks[{i}]"))
                         for i, item in enumerate(listed)), key=_BY_ID))


_BY_ID = operator.attrgetter("id")


def nodes_from_api(items: Iterable[Any]) -> tuple[Node, ...]:
    return tuple(sorted((_node(r) for r in _each("nodes", items)), key=lambda n: n.id))


def configs_from_api(items: Iterable[Any]) -> tuple[SwarmConfig, ...]:
    return tuple(sorted((_config(r) for r in _each("configs", items)), key=lambda c: c.id))


def secrets_from_api(items: Iterable[Any]) -> tuple[SwarmSecret, ...]:
    return tuple(sorted((_secret(r) for r in _each("secrets", items)), key=lambda s: s.id))


def networks_from_api(items: Iterable[Any]) -> tuple[SwarmNetwork, ...]:
    return tuple(sorted((_network(r) for r in _each("networks", items)), key=lambda n: n.id))

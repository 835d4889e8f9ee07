"""Engine API service JSON of the usual shape → `Service`, without `engine_json`'s `_Reader`s (pure).

The service counterpart of `task_json`: a Swarm of 10,000 services made some 80,000 `_Reader`s for
its services alone (one per object read), more than the fields themselves cost. `well_formed_service`
reads a service whose every field has its usual type directly, and returns None for anything else,
which `engine_json._service` then reads field by field to say what is wrong. Both read the same
values the same way (tests/unit/test_observed.py compares them).
"""

from __future__ import annotations

from typing import Any

from swarmgate.models.swarm.ports import PortBinding
from swarmgate.models.swarm.services import Service, UpdateStatus, VirtualIP
from swarmgate.models.swarm.task_json import binding, dict_or_empty, port_key


class _Unusual(Exception):
    """A value not of its usual type: the slow path reads the service again, naming it."""


def _obj(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = dict_or_empty(parent.get(key))
    if value is None:
        raise _Unusual
    return value


def _list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key) or []
    if type(value) is not list:
        raise _Unusual
    return value


def _text(parent: dict[str, Any], key: str, default: str | None = None) -> str:
    value = parent.get(key, default)
    if type(value) is not str:
        raise _Unusual
    return value


def _strings(parent: dict[str, Any], key: str) -> tuple[str, ...]:
    value = _list(parent, key)
    if not all(type(item) is str for item in value):
        raise _Unusual
    return tuple(value)


def _ports(raw: list[Any]) -> tuple[PortBinding, ...]:
    """`engine_json._ports`: each binding once, sorted when there are several."""
    seen: dict[tuple[int, int, str, str], None] = {}
    for item in raw:
        key = port_key(item)
        if key is None:
            raise _Unusual
        seen[key] = None
    return tuple(binding(*key) for key in (sorted(seen) if len(seen) > 1 else seen))


def _labels(spec: dict[str, Any]) -> dict[str, str]:
    value = spec.get("Labels") or {}
    if type(value) is not dict or not all(type(k) is str and type(v) is str for k, v in value.items()):
        raise _Unusual
    return dict(sorted(value.items()))


def _element_objects(items: list[Any]) -> list[dict[str, Any]]:
    if not all(type(item) is dict for item in items):
        raise _Unusual
    return items


def _virtual_ips(endpoint: dict[str, Any]) -> tuple[VirtualIP, ...]:
    out = []
    for vip in _element_objects(_list(endpoint, "VirtualIPs")):
        addr = vip.get("Addr")
        if addr:  # a network still being allocated lists its VIP without an address
            if type(addr) is not str:
                raise _Unusual
            out.append(VirtualIP(network_id=_text(vip, "NetworkID"), address=addr.split("/", 1)[0]))
    return tuple(sorted(out, key=lambda v: v.network_id))


def _update(obj: dict[str, Any]) -> UpdateStatus | None:
    if obj.get("UpdateStatus") is None:
        return None
    status = _obj(obj, "UpdateStatus")
    return UpdateStatus(state=_text(status, "State", ""), message=_text(status, "Message", ""),
                        started_at=_text(status, "StartedAt", ""), completed_at=_text(status, "CompletedAt", ""))


def well_formed_service(obj: dict[str, Any]) -> Service | None:
    """`engine_json._service` of a service whose fields all have their usual types; None for any other."""
    try:
        spec = _obj(obj, "Spec")
        template = _obj(spec, "TaskTemplate")
        container = _obj(template, "ContainerSpec")
        endpoint = _obj(obj, "Endpoint")
        version = _obj(obj, "Version").get("Index", 0)
        if type(version) is not int:
            raise _Unusual
        previous = obj.get("PreviousSpec")
        if previous is not None and type(previous) is not dict:
            raise _Unusual
        return Service(
            id=_text(obj, "ID"),
            name=_text(spec, "Name"),
            version=version,
            labels=_labels(spec),
            spec=spec,
            endpoint_ports=_ports(_list(endpoint, "Ports")),
            created_at=_text(obj, "CreatedAt", ""),
            env=_strings(container, "Env"),
            constraints=_strings(_obj(template, "Placement"), "Constraints"),
            config_names=tuple(_text(ref, "ConfigName", "") for ref in _element_objects(_list(container, "Configs"))),
            declared_ports=_ports(_list(_obj(spec, "EndpointSpec"), "Ports")),
            networks=tuple(_text(ref, "Target") for ref in _element_objects(_list(template, "Networks"))),
            virtual_ips=_virtual_ips(endpoint),
            update=_update(obj),
            previous_spec=previous,
        )
    except _Unusual:
        return None

"""Engine API task JSON of the usual shape → `Task`, without `engine_json`'s `_Reader`s (pure).

A Swarm of 10,000 services lists 30,000 tasks; reading each field through a `_Reader` (which can
name the path of a bad value) cost more than the rest of the snapshot. `well_formed_task` reads a
task whose every field has its usual type directly, and returns None for anything else, which
`engine_json._task` then reads field by field to say what is wrong. Both read the same values the
same way. The port helpers are shared by both.
"""

from __future__ import annotations

import functools
from typing import Any

from swarmgate.models.swarm.ports import PortBinding
from swarmgate.models.swarm.tasks import Task


def port_key(item: object) -> tuple[int, int, str, str] | None:
    """(target, published, protocol, mode) of a well-formed binding, else None."""
    if type(item) is not dict:
        return None
    target, published = item.get("TargetPort"), item.get("PublishedPort", 0)
    protocol, mode = item.get("Protocol", "tcp"), item.get("PublishMode", "ingress")
    if type(target) is int and type(published) is int and type(protocol) is str and type(mode) is str:
        return target, published, protocol, mode
    return None


@functools.lru_cache(maxsize=65536)
def binding(target: int, published: int, protocol: str, mode: str) -> PortBinding:
    # Bindings are values: tasks that share one share the object (30,000 tasks, a few ports each).
    return PortBinding(target_port=target, published_port=published, protocol=protocol, mode=mode)


@functools.lru_cache(maxsize=65536)
def bindings(keys: tuple[tuple[int, int, str, str], ...]) -> tuple[PortBinding, ...]:
    # A task's whole `PortStatus` at once: the tasks of a service (and services alike) share it.
    return tuple(binding(*key) for key in keys)


def dict_or_empty(value: object) -> dict[str, Any] | None:
    """What `_Reader.sub` reads for a value: {} for a missing one, None (read it the slow way) for a
    value that is not an object."""
    if value is None:
        return {}
    return value if type(value) is dict else None


def well_formed_task(obj: dict[str, Any]) -> Task | None:
    """`engine_json._task` of a task whose fields all have their usual types; None for any other."""
    status = dict_or_empty(obj.get("Status"))
    if status is None or obj.get("NetworksAttachments"):  # attachments: the slow path reads them
        return None
    container_status = dict_or_empty(status.get("ContainerStatus"))
    port_status = dict_or_empty(status.get("PortStatus"))
    spec = obj.get("Spec")
    if container_status is None or port_status is None or (spec is not None and type(spec) is not dict):
        return None
    task_id, service_id, node_id = obj.get("ID"), obj.get("ServiceID"), obj.get("NodeID", "")
    desired, state = obj.get("DesiredState", ""), status.get("State", "")
    if not (type(task_id) is str and type(service_id) is str and type(node_id) is str and type(desired) is str
            and type(state) is str):
        return None
    raw_ports = port_status.get("Ports") or []
    if type(raw_ports) is not list:
        return None
    keys = tuple([port_key(item) for item in raw_ports])
    if None in keys:
        return None
    slot, container = obj.get("Slot"), container_status.get("ContainerID")
    return Task(
        id=task_id, service_id=service_id, node_id=node_id,
        slot=slot if isinstance(slot, int) and not isinstance(slot, bool) else None,
        desired_state=desired, state=state,
        container_id=container if isinstance(container, str) and container else None,
        ports=bindings(keys),
        networks=(), template=spec,
    )

"""The proxy service's Engine API `ServiceSpec`, typed field by field (pure).

The spec is a `ServiceSpec` document as the Engine API (1.41) takes it, typed here (the parts
swarmgate writes, named as the API names them), so the same value is sent by `edge.actions`,
compared by `plan` and printed by `swarmgate plan`. The managed fields that `specdiff` projects both
sides onto (`MANAGED_PATHS`) are derived from these types: what we write is what we compare.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict, get_type_hints, is_typeddict


class FileTarget(TypedDict):
    Name: str
    UID: str
    GID: str
    Mode: int


class ConfigReference(TypedDict):
    File: FileTarget
    ConfigName: str
    ConfigID: NotRequired[str]  # filled in by `actions`


class SecretReference(TypedDict):
    File: FileTarget
    SecretName: str
    SecretID: NotRequired[str]  # filled in by `actions`


class Mount(TypedDict):
    Type: Literal["volume", "bind", "tmpfs"]
    Source: str
    Target: str
    ReadOnly: NotRequired[bool]


class ContainerSpec(TypedDict):
    Image: str
    Command: NotRequired[list[str]]
    Args: NotRequired[list[str]]
    Env: list[str]
    Labels: dict[str, str]
    StopSignal: str
    StopGracePeriod: int
    Configs: list[ConfigReference]
    Secrets: list[SecretReference]
    Mounts: list[Mount]


class SpreadOver(TypedDict):
    SpreadDescriptor: str


class PlacementPreference(TypedDict):
    Spread: SpreadOver


class Placement(TypedDict):
    Constraints: list[str]
    Preferences: list[PlacementPreference]


class NetworkAttachmentConfig(TypedDict):
    Target: str  # a network ID: the daemon turns a name into the ID anyway, and would read as a change


class TaskTemplate(TypedDict):
    ContainerSpec: ContainerSpec
    Placement: Placement
    # The overlay networks the proxy joins to reach routed tasks (see `proxy_networks`); absent when none.
    Networks: NotRequired[list[NetworkAttachmentConfig]]


class Replicated(TypedDict):
    Replicas: int


class Global(TypedDict):
    pass


class ServiceMode(TypedDict):
    # One of the two: the proxy is replicated, the certificate courier global (one task per LB node).
    Replicated: NotRequired[Replicated]
    Global: NotRequired[Global]


class UpdateConfig(TypedDict):
    Parallelism: int
    Delay: NotRequired[int]
    FailureAction: Literal["continue", "pause", "rollback"]
    Monitor: int
    Order: Literal["stop-first", "start-first"]


class PortConfig(TypedDict):
    Protocol: Literal["tcp", "udp", "sctp"]
    TargetPort: int
    PublishedPort: int
    PublishMode: Literal["ingress", "host"]


class EndpointSpec(TypedDict):
    # `Mode` is left to Docker's default (vip): the proxy is reached on its nodes' host ports.
    Ports: list[PortConfig]


class ServiceSpec(TypedDict):
    Name: str
    Labels: dict[str, str]
    TaskTemplate: TaskTemplate
    Mode: ServiceMode
    UpdateConfig: UpdateConfig
    RollbackConfig: UpdateConfig
    EndpointSpec: EndpointSpec


# Compared as one value each: Docker keeps them as written, and a partial match means nothing.
_COMPARED_WHOLE: tuple[type, ...] = (ServiceMode, UpdateConfig)


def _managed_paths(spec_type: type, prefix: tuple[str, ...] = ()) -> tuple[tuple[str, ...], ...]:
    paths: list[tuple[str, ...]] = []
    for key, hint in get_type_hints(spec_type).items():
        if is_typeddict(hint) and hint not in _COMPARED_WHOLE:
            paths.extend(_managed_paths(hint, (*prefix, key)))
        else:
            paths.append((*prefix, key))
    return tuple(paths)


# Every field of a proxy ServiceSpec the operator sets; anything else on the service is left as found.
MANAGED_PATHS: tuple[tuple[str, ...], ...] = _managed_paths(ServiceSpec)

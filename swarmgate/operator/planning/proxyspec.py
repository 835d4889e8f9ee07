"""The proxy service's desired Engine API spec, built from an extension's configuration (pure).

The spec is a `ServiceSpec` document as the Engine API (1.41) takes it, typed here field by field
(the parts swarmgate writes, named as the API names them), so the same value is sent by `actions`,
compared by `plan` and printed by `swarmgate plan`. The managed fields that `specdiff` projects both
sides onto (`MANAGED_PATHS`) are derived from these types: what we write is what we compare.

The spec depends only on the TOML configuration and on the TLS secrets of the route table: nothing
about the operator (where it runs, its port) reaches the proxy, so moving or restarting the
operator never rolls a proxy. Config and secret references name their objects only
(`ConfigName`/`SecretName`); `actions` fills in the IDs when it writes, because an ID does not exist
before the object is created and says nothing a content-addressed name does not already say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, NotRequired, TypedDict, get_type_hints, is_typeddict

from swarmgate.models.settings.config import Config, Extension
from swarmgate.models.swarm.ownership import KIND_PROXY, OWN_CONSTRAINTS_LABEL, owned_labels
from swarmgate.renderers.nginx import CONTROL_DIR

AGENT_PATH = "/swarmgate/agent.sh"
BOOTSTRAP_PATH = "/swarmgate/bootstrap.conf"
CHANNEL_KEY_PATH = "/run/secrets/swarmgate-channel"
# The agent keeps the last config its node served here; a named local volume outlives the task.
STATE_PATH = f"{CONTROL_DIR}/state"
NANOS = 1_000_000_000


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


class ServiceMode(TypedDict):
    Replicated: Replicated


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


def _nanos(seconds: float) -> int:
    return round(seconds * NANOS)


def _placement_preferences(prefs: Iterable[str]) -> list[PlacementPreference]:
    """Interlock writes preferences the CLI's way, `spread=node.labels.zone`."""
    out: list[PlacementPreference] = []
    for pref in prefs:
        _, _, descriptor = pref.partition("=")
        out.append({"Spread": {"SpreadDescriptor": descriptor or pref}})
    return out


def _file(path: str, *, mode: int) -> FileTarget:
    return {"Name": path, "UID": "0", "GID": "0", "Mode": mode}


def proxy_constraints(ext: Extension, user_added: Iterable[str]) -> list[str]:
    """The configured constraints plus any a person added by hand, sorted and deduplicated."""
    return sorted(set(ext.proxy_constraints) | set(user_added))


def state_volume(ext: Extension) -> str:
    """The named local volume holding the last config a node's proxy served (one per node)."""
    return f"{ext.proxy_service_name}-state"


def delivers_in_place(ext: Extension) -> bool:
    """Hitless delivery, which needs host-mode publishing: the operator pushes each config to each
    proxy task through the task's own node and host port. Through the ingress routing mesh a request
    lands on any task, so one task cannot be addressed; such an extension is delivered the plain way
    (a new Swarm config and a rolling update per change) until ingress gets a channel of its own."""
    return ext.hitless_service_update and ext.publish_mode == "host"


def delivery_notices(config: Config) -> tuple[str, ...]:
    """What the configuration asks for that delivery does differently, said once per start."""
    notices: list[str] = []
    if config.endpoint_override:
        notices.append("EndpointOverride is accepted and not needed: the operator pushes configs to its "
                       "proxies, which never contact it")
    for name, ext in sorted(config.extensions.items()):
        if delivers_in_place(ext) and ext.proxy_args:
            notices.append(f"Extensions.{name}: ProxyArgs are not applied with HitlessServiceUpdate = true: the "
                           "agent starts nginx itself (nginx -c ProxyConfigPath -g 'daemon off;'); put nginx "
                           "directives in Config.GlobalOptions instead, or set HitlessServiceUpdate = false")
        if ext.hitless_service_update and not delivers_in_place(ext):
            notices.append(f"Extensions.{name}: PublishMode = \"ingress\" cannot address one proxy task, so "
                           "HitlessServiceUpdate is not applied: every change is a new Swarm config and a "
                           "rolling update of the proxy (use PublishMode = \"host\" for in-place reloads)")
    return tuple(notices)


def proxy_networks(needed: Iterable[str], current: Iterable[str]) -> tuple[str, ...]:
    """The networks the proxy is on: those its routes need, plus every one it is on already.

    Joining or leaving a network changes the task template, so Swarm replaces every proxy task, and
    in host mode each replacement costs its node the listener for a moment. A network stays joined
    when its last route goes, so that a route coming and going on a network the proxy has (a
    service removed and deployed again, scaled to 0 and back) never rolls the proxy. The price is
    that `docker network rm` refuses that network while the proxy is on it: remove it from the
    proxy by hand (`docker service update --network-rm`), and swarmgate leaves it off until a
    route needs it again.
    """
    return tuple(sorted(set(needed) | set(current)))


def build_proxy_spec(
    ext: Extension,
    *,
    agent_config: str | None,
    bootstrap_config: str | None,
    proxy_config: str | None,
    channel_secret: str | None,
    tls_secrets: Iterable[str] = (),
    networks: Iterable[str] = (),
    user_constraints: Iterable[str] = (),
    user_labels: dict[str, str] | None = None,
) -> ServiceSpec:
    """The whole `ServiceSpec` of one extension's proxy service.

    Hitless mode (`agent_config` given): the container runs the agent, which starts nginx from the
    node's last served config (the state volume) or the bootstrap config, and applies what the
    operator pushes through nginx's control server. Plain mode (`proxy_config` given): nginx reads
    the rendered config straight from a Swarm config at `ProxyConfigPath`, and each new config is a
    new object and a rolling update.
    """
    env: list[str] = []
    configs: list[ConfigReference] = []
    secrets: list[SecretReference] = []
    mounts: list[Mount] = []
    command: list[str] | None = None
    if agent_config is not None:
        if bootstrap_config is None or channel_secret is None:
            raise ValueError("hitless delivery needs a bootstrap config and the channel key's secret")
        command = ["/bin/sh", AGENT_PATH]
        env = sorted([
            f"SWARMGATE_CONFIG_PATH={ext.proxy_config_path}",
            f"SWARMGATE_BOOTSTRAP_PATH={BOOTSTRAP_PATH}",
            f"SWARMGATE_KEY_FILE={CHANNEL_KEY_PATH}",
            # Every status the agent writes names its task, so a status is never taken for another's.
            "SWARMGATE_TASK_ID={{.Task.ID}}",
        ])
        configs.append({"File": _file(AGENT_PATH, mode=0o555), "ConfigName": agent_config})
        configs.append({"File": _file(BOOTSTRAP_PATH, mode=0o444), "ConfigName": bootstrap_config})
        secrets.append({"File": _file(CHANNEL_KEY_PATH, mode=0o400), "SecretName": channel_secret})
        mounts.append({"Type": "volume", "Source": state_volume(ext), "Target": STATE_PATH})
    elif proxy_config is not None:
        configs.append({"File": _file(ext.proxy_config_path, mode=0o444), "ConfigName": proxy_config})
    else:
        raise ValueError("a proxy spec needs either the agent or a rendered proxy config")
    for name in sorted(set(tls_secrets)):
        secrets.append({"File": _file(f"/run/secrets/{name}", mode=0o400), "SecretName": name})

    labels = {**(user_labels or {}), **ext.proxy_labels, **owned_labels(kind=KIND_PROXY, extension=ext.name)}
    labels[OWN_CONSTRAINTS_LABEL] = ",".join(sorted(set(ext.proxy_constraints)))

    container: ContainerSpec = {
        "Image": ext.proxy_image,
        "Labels": dict(sorted(ext.proxy_container_labels.items())),
        "Env": env,
        "StopSignal": ext.proxy_stop_signal,
        "StopGracePeriod": _nanos(ext.proxy_stop_grace_period),
        "Configs": configs,
        "Secrets": secrets,
        "Mounts": mounts,
    }
    if command is not None:
        container["Command"] = command
    if ext.proxy_args:
        container["Args"] = list(ext.proxy_args)
    ports: list[PortConfig] = [
        {"Protocol": "tcp", "TargetPort": ext.target_port, "PublishedPort": ext.published_port,
         "PublishMode": ext.publish_mode},
    ]
    if ext.published_ssl_port and ext.target_ssl_port:
        ports.append({"Protocol": "tcp", "TargetPort": ext.target_ssl_port,
                      "PublishedPort": ext.published_ssl_port, "PublishMode": ext.publish_mode})
    # Host-mode ports are bound on the node: a new task cannot start next to the old one, so every
    # roll is stop-first, one task at a time, and a failed roll goes back to what served before.
    update: UpdateConfig = {"Parallelism": 1, "Delay": _nanos(ext.proxy_update_delay), "FailureAction": "rollback",
                            "Monitor": 5 * NANOS, "Order": "stop-first"}
    rollback: UpdateConfig = {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5 * NANOS,
                              "Order": "stop-first"}
    template: TaskTemplate = {
        "ContainerSpec": container,
        "Placement": {
            "Constraints": proxy_constraints(ext, user_constraints),
            "Preferences": _placement_preferences(ext.proxy_placement_preferences),
        },
    }
    if networks:
        template["Networks"] = [{"Target": network} for network in sorted(set(networks))]
    return {
        "Name": ext.proxy_service_name,
        "Labels": dict(sorted(labels.items())),
        "TaskTemplate": template,
        "Mode": {"Replicated": {"Replicas": ext.proxy_replicas}},
        "UpdateConfig": update,
        "RollbackConfig": rollback,
        "EndpointSpec": {"Ports": sorted(ports, key=lambda p: p["TargetPort"])},
    }

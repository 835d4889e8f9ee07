"""The proxy service's desired Engine API spec, built from an extension's configuration (pure).

The spec's shape is `service_spec`'s types. It depends only on the TOML configuration and, with plain
delivery, on the TLS secrets of the route table (a hitless proxy reads them from the certificate
courier's volume instead, see `courier`, so a certificate change never rolls it): nothing about
the operator (where it runs, its port) reaches the proxy, so moving or restarting the operator
never rolls a proxy. Config and secret references name their
objects only (`ConfigName`/`SecretName`); `edge.actions` fills in the IDs when it writes, because an
ID does not exist before the object is created and says nothing a content-addressed name does not
already say.
"""

from __future__ import annotations

from collections.abc import Iterable

from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.ownership import KIND_PROXY, OWN_CONSTRAINTS_LABEL, owned_labels
from swarmgate.operator.planning.courier import proxy_certs_mount
from swarmgate.operator.planning.service_spec import (
    ConfigReference,
    ContainerSpec,
    FileTarget,
    Mount,
    PlacementPreference,
    PortConfig,
    SecretReference,
    ServiceSpec,
    TaskTemplate,
    UpdateConfig,
)
from swarmgate.renderers.nginx import CONTROL_DIR

AGENT_PATH = "/swarmgate/agent.sh"
BOOTSTRAP_PATH = "/swarmgate/bootstrap.conf"
CHANNEL_KEY_PATH = "/run/secrets/swarmgate-channel"
# The agent keeps the last config its node served here; a named local volume outlives the task.
STATE_PATH = f"{CONTROL_DIR}/state"
NANOS = 1_000_000_000


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
    readable_secrets: Iterable[str] = (),
    networks: Iterable[str] = (),
    user_constraints: Iterable[str] = (),
    user_labels: dict[str, str] | None = None,
) -> ServiceSpec:
    """The whole `ServiceSpec` of one extension's proxy service.

    Hitless mode (`agent_config` given): the container runs the agent, which starts nginx from the
    node's last served config (the state volume) or the bootstrap config, and applies what the
    operator pushes through nginx's control server; it mounts no TLS secret (`tls_secrets` is not
    used), only the certificate courier's volume. Plain mode (`proxy_config` given): nginx reads
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
        mounts.append(proxy_certs_mount(ext))
    elif proxy_config is not None:
        configs.append({"File": _file(ext.proxy_config_path, mode=0o444), "ConfigName": proxy_config})
        readable = set(readable_secrets)  # htpasswd files: nginx's workers read them at each request
        for name in sorted(set(tls_secrets)):
            secrets.append({"File": _file(f"/run/secrets/{name}", mode=0o444 if name in readable else 0o400),
                            "SecretName": name})
    else:
        raise ValueError("a proxy spec needs either the agent or a rendered proxy config")

    labels = {**(user_labels or {}), **ext.proxy_labels, **owned_labels(kind=KIND_PROXY, extension=ext.name)}
    labels[OWN_CONSTRAINTS_LABEL] = ",".join(sorted(set(ext.proxy_constraints)))

    # In the docker CLI's order (by source, then target): any `docker service update` of the proxy,
    # such as the seed's `--constraint-add`, writes its mounts back in that order, and a task template
    # whose mounts moved is a new one to Swarm: every proxy task would be replaced.
    mounts.sort(key=lambda m: (m["Source"], m["Target"]))
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

"""The proxy service's desired Engine API spec, built from an extension's configuration (pure).

The spec is a plain `ServiceSpec` document as the Engine API (1.41) takes it, so the same value is
sent by `actions`, compared by `plan` and printed by `swarmgate plan`. Config and secret references
name their objects only (`ConfigName`/`SecretName`); `actions` fills in the IDs when it writes,
because an ID does not exist before the object is created and says nothing a content-addressed
name does not already say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swarmgate.models.settings.config import Extension
from swarmgate.models.swarm.ownership import KIND_PROXY, OWN_CONSTRAINTS_LABEL, owned_labels

AGENT_PATH = "/swarmgate/agent.sh"
BOOTSTRAP_PATH = "/swarmgate/bootstrap.conf"
TOKEN_PATH = "/run/secrets/swarmgate-proxy-token"
NANOS = 1_000_000_000
ENDPOINT_ENV = "SWARMGATE_ENDPOINT"


def _nanos(seconds: float) -> int:
    return round(seconds * NANOS)


def _placement_preferences(prefs: Iterable[str]) -> list[dict[str, Any]]:
    """Interlock writes preferences the CLI's way, `spread=node.labels.zone`."""
    out: list[dict[str, Any]] = []
    for pref in prefs:
        _, _, descriptor = pref.partition("=")
        out.append({"Spread": {"SpreadDescriptor": descriptor or pref}})
    return out


def _file_ref(path: str, *, mode: int) -> dict[str, Any]:
    return {"Name": path, "UID": "0", "GID": "0", "Mode": mode}


def proxy_constraints(ext: Extension, user_added: Iterable[str]) -> list[str]:
    """The configured constraints plus any a person added by hand, sorted and deduplicated."""
    return sorted(set(ext.proxy_constraints) | set(user_added))


def build_proxy_spec(
    ext: Extension,
    *,
    endpoint: str | None,
    agent_config: str | None,
    bootstrap_config: str | None,
    proxy_config: str | None,
    token_secret: str | None,
    tls_secrets: Iterable[str] = (),
    user_constraints: Iterable[str] = (),
    user_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The whole `ServiceSpec` of one extension's proxy service.

    Hitless mode (`agent_config` given): the container runs the agent, which starts nginx from the
    bootstrap config and fetches the live config from `endpoint`. Plain mode (`proxy_config` given):
    nginx reads the rendered config straight from a Swarm config at `ProxyConfigPath`, and each new
    config is a new object and a rolling update.
    """
    env: list[str] = []
    configs: list[dict[str, Any]] = []
    secrets: list[dict[str, Any]] = []
    command: list[str] | None = None
    args = list(ext.proxy_args)
    if agent_config is not None:
        if bootstrap_config is None or token_secret is None or endpoint is None:
            raise ValueError("hitless delivery needs a bootstrap config, a token secret and an endpoint")
        command = ["/bin/sh", AGENT_PATH]
        env = sorted(
            [
                f"{ENDPOINT_ENV}={endpoint}",
                f"SWARMGATE_CLUSTER={ext.name}",
                f"SWARMGATE_CONFIG_PATH={ext.proxy_config_path}",
                f"SWARMGATE_BOOTSTRAP_PATH={BOOTSTRAP_PATH}",
                f"SWARMGATE_TOKEN_FILE={TOKEN_PATH}",
                "SWARMGATE_TASK_ID={{.Task.ID}}",
                "SWARMGATE_NODE_ID={{.Node.ID}}",
                "SWARMGATE_NODE_HOSTNAME={{.Node.Hostname}}",
            ]
        )
        configs.append({"File": _file_ref(AGENT_PATH, mode=0o555), "ConfigName": agent_config})
        configs.append({"File": _file_ref(BOOTSTRAP_PATH, mode=0o444), "ConfigName": bootstrap_config})
        secrets.append({"File": _file_ref(TOKEN_PATH, mode=0o400), "SecretName": token_secret})
    elif proxy_config is not None:
        configs.append({"File": _file_ref(ext.proxy_config_path, mode=0o444), "ConfigName": proxy_config})
    else:
        raise ValueError("a proxy spec needs either the agent or a rendered proxy config")
    for name in sorted(set(tls_secrets)):
        secrets.append({"File": _file_ref(f"/run/secrets/{name}", mode=0o400), "SecretName": name})

    constraints = proxy_constraints(ext, user_constraints)
    labels = {**(user_labels or {}), **ext.proxy_labels, **owned_labels(kind=KIND_PROXY, extension=ext.name)}
    labels[OWN_CONSTRAINTS_LABEL] = ",".join(sorted(set(ext.proxy_constraints)))

    container: dict[str, Any] = {
        "Image": ext.proxy_image,
        "Labels": dict(sorted(ext.proxy_container_labels.items())),
        "Env": env,
        "StopSignal": ext.proxy_stop_signal,
        "StopGracePeriod": _nanos(ext.proxy_stop_grace_period),
        "Configs": configs,
        "Secrets": secrets,
    }
    if command is not None:
        container["Command"] = command
    if args:
        container["Args"] = args
    ports = [
        {"Protocol": "tcp", "TargetPort": ext.target_port, "PublishedPort": ext.published_port,
         "PublishMode": ext.publish_mode},
    ]
    if ext.published_ssl_port and ext.target_ssl_port:
        ports.append({"Protocol": "tcp", "TargetPort": ext.target_ssl_port,
                      "PublishedPort": ext.published_ssl_port, "PublishMode": ext.publish_mode})
    # Host-mode ports are bound on the node: a new task cannot start next to the old one, so every
    # roll is stop-first, one task at a time, and a failed roll goes back to what served before.
    update = {"Parallelism": 1, "Delay": _nanos(ext.proxy_update_delay), "FailureAction": "rollback",
              "Monitor": 5 * NANOS, "Order": "stop-first"}
    rollback = {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5 * NANOS, "Order": "stop-first"}
    return {
        "Name": ext.proxy_service_name,
        "Labels": dict(sorted(labels.items())),
        "TaskTemplate": {
            "ContainerSpec": container,
            "Placement": {
                "Constraints": constraints,
                "Preferences": _placement_preferences(ext.proxy_placement_preferences),
            },
        },
        "Mode": {"Replicated": {"Replicas": ext.proxy_replicas}},
        "UpdateConfig": update,
        "RollbackConfig": rollback,
        "EndpointSpec": {"Mode": "vip", "Ports": sorted(ports, key=lambda p: p["TargetPort"])},
    }

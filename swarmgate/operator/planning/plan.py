"""Plan: the typed actions that take the observed Swarm to the desired state (pure).

`plan()` is data in, data out: `swarmgate plan` prints exactly the list a live pass would apply. On a
converged cluster it returns a single `NoOp`; that is what makes a restart of the operator free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import (
    EXTENSION_LABEL,
    KIND_LABEL,
    KIND_TOKEN,
    TOKEN_SECRET_NAME,
    is_owned,
    owned_labels,
)
from swarmgate.operator.planning.desired import ConfigObject, DesiredState, ExtensionDesired
from swarmgate.operator.planning.specdiff import SpecDiff, diff_specs, merge_managed

# Owned configs nobody references are kept this many per extension and kind, newest first, so a
# rollback of the proxy service still finds the config it rolls back to.
DEFAULT_RETENTION = 3


@dataclass(frozen=True)
class CreateTokenSecret:
    name: str
    labels: dict[str, str]

    def describe(self) -> str:
        return f"create secret {self.name} (proxy token; only its digest is kept)"


@dataclass(frozen=True)
class CreateConfig:
    extension: str
    config: ConfigObject

    def describe(self) -> str:
        return f"create config {self.config.name} ({len(self.config.data)} bytes)"


@dataclass(frozen=True)
class CreateService:
    extension: str
    spec: dict[str, Any]

    def describe(self) -> str:
        return f"create service {self.spec['Name']}"


@dataclass(frozen=True)
class UpdateService:
    extension: str
    service_id: str
    version: int
    spec: dict[str, Any]
    diff: SpecDiff

    def describe(self) -> str:
        lines = [f"update service {self.spec['Name']} (version {self.version})"]
        lines += [f"    {change}" for change in self.diff.changes]
        return "\n".join(lines)


@dataclass(frozen=True)
class PublishProxyConfig:
    extension: str
    digest: str
    text: str

    def describe(self) -> str:
        return f"publish proxy config {self.digest[:12]} to the agents of {self.extension}"


@dataclass(frozen=True)
class RemoveConfig:
    config_id: str
    name: str

    def describe(self) -> str:
        return f"remove unused config {self.name}"


@dataclass(frozen=True)
class NoOp:
    def describe(self) -> str:
        return "nothing to do: converged"


Action = CreateTokenSecret | CreateConfig | CreateService | UpdateService | PublishProxyConfig | RemoveConfig | NoOp


def _referenced_configs(observed: ObservedState) -> set[str]:
    return {name for service in observed.services for name in service.config_names}


def _plan_extension(ext: ExtensionDesired, observed: ObservedState, published: Mapping[str, str]) -> list[Action]:
    if ext.proxy_spec is None:
        return []
    actions: list[Action] = []
    existing = {c.name for c in observed.configs}
    actions += [CreateConfig(ext.name, c) for c in ext.configs if c.name not in existing]
    if ext.hitless and published.get(ext.name) != ext.rendered.digest:
        actions.append(PublishProxyConfig(ext.name, ext.rendered.digest, ext.rendered.text))
    current = observed.service_named(ext.proxy_spec["Name"])
    if current is None:
        actions.append(CreateService(ext.name, ext.proxy_spec))
    else:
        diff = diff_specs(current.spec, ext.proxy_spec)
        if diff:
            merged = merge_managed(current.spec, ext.proxy_spec)
            actions.append(UpdateService(ext.name, current.id, current.version, merged, diff))
    return actions


def _garbage(desired: DesiredState, observed: ObservedState, retention: int) -> list[Action]:
    wanted = {c.name for e in desired.extensions for c in e.configs}
    in_use = _referenced_configs(observed) | wanted
    groups: dict[tuple[str, str], list[Any]] = {}
    for cfg in observed.configs:
        if not is_owned(cfg.labels) or cfg.name in in_use:
            continue
        key = (cfg.labels.get(EXTENSION_LABEL, ""), cfg.labels.get(KIND_LABEL, ""))
        groups.setdefault(key, []).append(cfg)
    removals: list[Action] = []
    for _, configs in sorted(groups.items()):
        newest_first = sorted(configs, key=lambda c: (c.version, c.name), reverse=True)
        removals += [RemoveConfig(c.id, c.name) for c in newest_first[retention:]]
    return removals


def plan(
    desired: DesiredState,
    observed: ObservedState,
    *,
    published: Mapping[str, str],
    retention: int = DEFAULT_RETENTION,
) -> list[Action]:
    """Actions in the order they must run: token, configs, publish, services, then clean-up."""
    actions: list[Action] = []
    if desired.needs_token and not any(s.name == TOKEN_SECRET_NAME for s in observed.secrets):
        actions.append(CreateTokenSecret(TOKEN_SECRET_NAME, owned_labels(kind=KIND_TOKEN)))
    for ext in desired.extensions:
        actions += _plan_extension(ext, observed, published)
    actions += _garbage(desired, observed, retention)
    return actions or [NoOp()]

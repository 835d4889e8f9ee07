"""Plan: the typed actions that take the observed Swarm to the desired state (pure).

`plan()` is data in, data out: `swarmgate plan` prints exactly the list a live pass would apply. On a
converged Swarm it returns a single `NoOp`; that is what makes a restart of the operator free.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import (
    CHANNEL_SECRET_NAME,
    EXTENSION_LABEL,
    KIND_AGENT,
    KIND_BOOTSTRAP,
    KIND_CHANNEL,
    KIND_LABEL,
    KIND_PROXY_CONFIG,
    is_owned,
    owned_labels,
)
from swarmgate.models.swarm.services import Service
from swarmgate.models.swarm.tasks import Task
from swarmgate.operator.planning.desired import ConfigObject, DesiredState, ExtensionDesired
from swarmgate.operator.planning.proxyspec import ServiceSpec
from swarmgate.operator.planning.specdiff import SpecDiff, diff_specs, essence, merge_managed

# Owned configs nobody references are kept this many per extension and kind, newest first, so a
# rollback of the proxy service still finds the config it rolls back to.
DEFAULT_RETENTION = 3


@dataclass(frozen=True)
class CreateChannelSecret:
    name: str
    labels: dict[str, str]
    generation: int = 0  # 0: the key every proxy task starts with; N: `swarmgate rotate-key`'s

    def describe(self) -> str:
        if self.generation:
            return f"create secret {self.name} (the delivery channel's key, generation {self.generation})"
        return f"create secret {self.name} (the delivery channel's key: the operator and the proxies mount it)"


@dataclass(frozen=True)
class MountChannelSecret:
    """Mount the channel key's secrets into the operator's own service: the one write to a service
    swarmgate does not own, and only these references are added (the operator restarts once per new
    key generation, holding the keys; no proxy task is touched)."""

    service_id: str
    service_name: str
    version: int
    spec: Mapping[str, Any]
    secrets: tuple[str, ...] = (CHANNEL_SECRET_NAME,)

    def describe(self) -> str:
        return (f"update service {self.service_name}: mount secret(s) {', '.join(self.secrets)} (the operator "
                "restarts once, holding the channel key)")


def is_channel_secret(name: str) -> bool:
    """`swarmgate-channel` (generation 0) or `swarmgate-channel-N` (a rotated generation)."""
    rest = name.removeprefix(CHANNEL_SECRET_NAME)
    return rest == "" or (rest.startswith("-") and rest[1:].isdigit() and not rest[1:].startswith("0"))


def own_channel_mount(observed: ObservedState, own_task: Task | None) -> MountChannelSecret | None:
    """The mount an operator running as a Swarm task needs once a channel key's secret exists that
    its service does not mount yet (each at /run/secrets/<its name>)."""
    if own_task is None:
        return None
    service = next((s for s in observed.services if s.id == own_task.service_id), None)
    if service is None:
        return None
    spec = copy.deepcopy(dict(service.spec))
    container = spec.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
    refs = container.get("Secrets") or []
    mounted = {ref.get("SecretName") for ref in refs}
    missing = sorted(s.name for s in observed.secrets if is_channel_secret(s.name) and s.name not in mounted)
    if not missing:
        return None
    container["Secrets"] = [*refs, *({"SecretName": name, "File": {"Name": name, "UID": "0", "GID": "0",
                                                                     "Mode": 0o400}} for name in missing)]
    return MountChannelSecret(service.id, service.name, service.version, spec, tuple(missing))


@dataclass(frozen=True)
class CreateConfig:
    extension: str
    config: ConfigObject

    def describe(self) -> str:
        return f"create config {self.config.name} ({len(self.config.data)} bytes)"


@dataclass(frozen=True)
class CreateService:
    extension: str
    spec: ServiceSpec

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
        return f"push proxy config {self.digest[:12]} to the proxies of {self.extension}"


@dataclass(frozen=True)
class RemoveConfig:
    config_id: str
    name: str

    def describe(self) -> str:
        return f"remove unused config {self.name}"


HoldReason = Literal["rolled_back", "nginx_rejected"]
HOLD_REASONS: tuple[HoldReason, ...] = ("rolled_back", "nginx_rejected")


@dataclass(frozen=True)
class NoOp:
    """Nothing to write. With `hold`, the reason an extension's change is deliberately not applied:

    * `rolled_back`: Swarm rolled the proxy service back from exactly the spec this pass would write
      again; writing it again would roll the proxies again (and again: a loop against Swarm).
    * `nginx_rejected`: `nginx -t` rejects the config this pass rendered; nothing of the extension
      changes, so its proxies keep the last good config.

    Either way the operator waits for the desired spec (or config) to change."""

    extension: str | None = None
    hold: HoldReason | None = None
    detail: str = ""

    def describe(self) -> str:
        if self.hold is None:
            return "nothing to do: converged"
        return f"hold {self.extension}: {self.detail}"


Action = (CreateChannelSecret | CreateConfig | CreateService | UpdateService | PublishProxyConfig | RemoveConfig
          | MountChannelSecret | NoOp)


def _referenced_configs(observed: ObservedState) -> set[str]:
    return {name for service in observed.services for name in service.config_names}


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A digest of a spec's essence (the fields the operator manages, normalized as `diff_specs` does)."""
    return hashlib.sha256(json.dumps(essence(spec), sort_keys=True, default=str).encode()).hexdigest()


def record_attempts(done: Iterable[Action], attempted: MutableMapping[str, str]) -> None:
    """Remember, per extension, the spec the operator last wrote (what Swarm may roll back from)."""
    for action in done:
        if isinstance(action, UpdateService | CreateService):
            attempted[action.extension] = spec_digest(action.spec)


def _failed_under(desired: Mapping[str, Any], current: Service, observed: ObservedState) -> bool:
    """A task of `current` failed under exactly the TaskTemplate `desired` brings, and the rest of the
    spec is what Swarm restored: evidence that survives an operator restart (or a new leader)."""
    if any(not c.path.startswith("TaskTemplate") for c in diff_specs(current.spec, desired).changes):
        return False
    template = {"TaskTemplate": desired.get("TaskTemplate", {})}
    return any(t.failed and t.template is not None and not diff_specs({"TaskTemplate": t.template}, template)
               for t in observed.tasks_of(current.id))


def _rollback_hold(ext: str, current: Service, desired: Mapping[str, Any],
                   attempted: str | None, observed: ObservedState) -> NoOp | None:
    """A hold when Swarm rolled `current` back from exactly `desired`, else None.

    Swarm's own rollback (FailureAction rollback) puts the old spec back and clears PreviousSpec, so
    what it rolled back from is known to whoever wrote it (`attempted`, the digest of the spec this
    operator last wrote) and from the tasks that failed under it. A rollback by hand (`docker service
    rollback`) keeps it in PreviousSpec."""
    update = current.update
    if update is None or not update.rolled_back:
        return None
    from_previous = current.previous_spec is not None and not diff_specs(current.previous_spec, desired)
    if not (from_previous or attempted == spec_digest(desired) or _failed_under(desired, current, observed)):
        return None
    # The detail stays the same while the rollback runs and after it (rollback_started, _completed):
    # it is one hold, logged once.
    return NoOp(ext, "rolled_back", f"Swarm rolled service {current.name} back from this spec; not applying it "
                "again until the desired spec changes")


def nginx_texts(ext: ExtensionDesired) -> tuple[str, ...]:
    """Every nginx config this extension's plan would hand to a proxy: the published one (hitless) and
    the ones shipped as Swarm configs (the bootstrap, or the whole config in plain mode)."""
    texts = [c.data.decode("utf-8", "replace") for c in ext.configs
             if c.labels.get(KIND_LABEL) in (KIND_BOOTSTRAP, KIND_PROXY_CONFIG)]
    if ext.hitless and ext.rendered.text:
        texts.append(ext.rendered.text)
    return tuple(dict.fromkeys(texts))


def rejected_extensions(desired: DesiredState, verdict: Callable[[str], str | None]) -> dict[str, str]:
    """Per extension, nginx's message for the first of its configs that `verdict` rejects.

    `verdict` is `renderers.validate.NginxGate().verdict` in the operator (it runs `nginx -t`); this
    function only decides what to ask, so it stays testable with any verdict."""
    rejected: dict[str, str] = {}
    for ext in desired.extensions:
        if ext.proxy_spec is None:
            continue
        for text in nginx_texts(ext):
            message = verdict(text)
            if message is not None:
                rejected[ext.name] = message
                break
    return rejected


def _plan_extension(ext: ExtensionDesired, observed: ObservedState, published: Mapping[str, str], *,
                    rejected: Mapping[str, str], attempted: Mapping[str, str]) -> list[Action]:
    if ext.proxy_spec is None:
        return []
    if ext.name in rejected:
        return [NoOp(ext.name, "nginx_rejected",
                     f"nginx -t rejects the rendered config, so nothing of it is published and the proxies keep "
                     f"the last good one: {rejected[ext.name]}")]
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
        hold = _rollback_hold(ext.name, current, ext.proxy_spec, attempted.get(ext.name), observed) if diff else None
        if hold is not None:
            actions.append(hold)
        elif diff:
            merged = merge_managed(current.spec, ext.proxy_spec)
            actions.append(UpdateService(ext.name, current.id, current.version, merged, diff))
    return actions


_COLLECTABLE = frozenset({KIND_AGENT, KIND_BOOTSTRAP, KIND_PROXY_CONFIG})


def _garbage(desired: DesiredState, observed: ObservedState, retention: int) -> list[Action]:
    wanted = {c.name for e in desired.extensions for c in e.configs}
    in_use = _referenced_configs(observed) | wanted
    groups: dict[tuple[str, str], list[Any]] = {}
    for cfg in observed.configs:
        # Only content-addressed proxy configs are garbage once unused; other owned configs (the
        # leader lease, mounted by nobody) live for as long as the operator does.
        if not is_owned(cfg.labels) or cfg.name in in_use or cfg.labels.get(KIND_LABEL) not in _COLLECTABLE:
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
    rejected: Mapping[str, str] | None = None,
    attempted: Mapping[str, str] | None = None,
) -> list[Action]:
    """Actions in the order they must run: channel key, configs, publish, services, then clean-up.

    `rejected`: extensions whose rendered config nginx -t rejects (`rejected_extensions`), planned as
    a hold. `attempted`: the spec digest the operator last wrote per extension (`record_attempts`),
    so a spec Swarm rolled back from is held rather than written again."""
    actions: list[Action] = []
    # An operator whose every extension is held writes nothing at all, not even the channel key.
    held = all(e.name in (rejected or {}) for e in desired.extensions)
    if desired.needs_channel and not held and not any(s.name == CHANNEL_SECRET_NAME for s in observed.secrets):
        actions.append(CreateChannelSecret(CHANNEL_SECRET_NAME, owned_labels(kind=KIND_CHANNEL)))
    for ext in desired.extensions:
        actions += _plan_extension(ext, observed, published, rejected=rejected or {}, attempted=attempted or {})
    actions += _garbage(desired, observed, retention)
    return actions or [NoOp()]

"""Plan: the actions (`actions`) that take the observed Swarm to the desired state, in order (pure).

`plan()` is data in, data out: `swarmgate plan` prints exactly the list a live pass would apply. On a
converged Swarm it returns a single `NoOp`; that is what makes a restart of the operator free. Why
an extension is held rather than written is `holds`' to decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import (
    CHANNEL_SECRET_NAME,
    EXTENSION_LABEL,
    KIND_AGENT,
    KIND_BOOTSTRAP,
    KIND_CHANNEL,
    KIND_COURIER,
    KIND_LABEL,
    KIND_PROXY_CONFIG,
    is_owned,
    owned_labels,
)
from swarmgate.operator.planning.actions import (
    Action,
    CreateChannelSecret,
    CreateConfig,
    CreateService,
    NoOp,
    PublishProxyConfig,
    RemoveConfig,
    RemoveCourier,
    UpdateService,
)
from swarmgate.operator.planning.courier import mounted_ids
from swarmgate.operator.planning.desired import DesiredState, ExtensionDesired
from swarmgate.operator.planning.holds import rollback_hold
from swarmgate.operator.planning.specdiff import diff_specs, merge_managed

# Owned configs nobody references are kept this many per extension and kind, newest first, so a
# rollback of the proxy service still finds the config it rolls back to.
DEFAULT_RETENTION = 3


def _referenced_configs(observed: ObservedState) -> set[str]:
    return {name for service in observed.services for name in service.config_names}


def _plan_courier(ext: ExtensionDesired, observed: ObservedState) -> list[Action]:
    """Create or update the certificate courier (`courier`), only when a managed field differs. It is
    planned before the push, so its new files are on their way when the agent waits for them."""
    spec = ext.courier_spec
    if spec is None:
        return []
    current = observed.service_named(spec["Name"])
    if current is None:
        return [CreateService(ext.name, spec, role="courier")]
    if not is_owned(current.labels):
        return []  # someone else's service by that name: never ours to write
    diff = diff_specs(current.spec, spec)
    if not diff:
        return []
    return [UpdateService(ext.name, current.id, current.version, merge_managed(current.spec, spec), diff,
                          role="courier")]


def _retire_courier(ext: ExtensionDesired, observed: ObservedState) -> list[Action]:
    """With plain delivery, the owned courier this extension had is removed once it mounts no secret
    and every running task of it runs that spec (so each has deleted its key files)."""
    if ext.hitless or ext.courier_spec is not None or ext.proxy_spec is None:
        return []
    courier = observed.service_named(f"{ext.proxy_spec['Name']}-certs")
    if (courier is None or not is_owned(courier.labels) or courier.labels.get(KIND_LABEL) != KIND_COURIER
            or courier.labels.get(EXTENSION_LABEL) != ext.name or mounted_ids(courier)):
        return []
    running = [t for t in observed.tasks_of(courier.id) if t.state == "running"]
    if any(_mounts_secrets(t.template) for t in running):
        return []  # a task of the older spec still runs, with its files
    return [RemoveCourier(ext.name, courier.id, courier.name)]


def _mounts_secrets(template: Mapping[str, Any] | None) -> bool:
    return bool(((template or {}).get("ContainerSpec") or {}).get("Secrets"))


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
    actions += _plan_courier(ext, observed) + _retire_courier(ext, observed)
    if ext.hitless and published.get(ext.name) != ext.rendered.digest:
        actions.append(PublishProxyConfig(ext.name, ext.rendered.digest, ext.rendered.text))
    current = observed.service_named(ext.proxy_spec["Name"])
    if current is None:
        actions.append(CreateService(ext.name, ext.proxy_spec))
    else:
        diff = diff_specs(current.spec, ext.proxy_spec)
        hold = rollback_hold(ext.name, current, ext.proxy_spec, attempted.get(ext.name), observed) if diff else None
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

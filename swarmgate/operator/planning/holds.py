"""Why a plan holds an extension back instead of writing it (pure).

Two reasons, the two `NoOp.hold` values: Swarm rolled the proxy back from exactly the spec this pass
would write (`rollback_hold`, with the operator's memory of what it wrote, `record_attempts`), or
`nginx -t` rejects a config this pass rendered (`rejected_extensions`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import KIND_BOOTSTRAP, KIND_LABEL, KIND_PROXY_CONFIG
from swarmgate.models.swarm.services import Service
from swarmgate.operator.planning.actions import Action, CreateService, NoOp, UpdateService
from swarmgate.operator.planning.desired import DesiredState, ExtensionDesired
from swarmgate.operator.planning.specdiff import diff_specs, essence


def spec_digest(spec: Mapping[str, Any]) -> str:
    """A digest of a spec's essence (the fields the operator manages, normalized as `diff_specs` does)."""
    return hashlib.sha256(json.dumps(essence(spec), sort_keys=True, default=str).encode()).hexdigest()


def record_attempts(done: Iterable[Action], attempted: MutableMapping[str, str]) -> None:
    """Remember, per extension, the spec the operator last wrote (what Swarm may roll back from)."""
    for action in done:
        if isinstance(action, UpdateService | CreateService) and action.role == "proxy":
            attempted[action.extension] = spec_digest(action.spec)


def _failed_under(desired: Mapping[str, Any], current: Service, observed: ObservedState) -> bool:
    """A task of `current` failed under exactly the TaskTemplate `desired` brings, and the rest of the
    spec is what Swarm restored: evidence that survives an operator restart (or a new leader)."""
    if any(not c.path.startswith("TaskTemplate") for c in diff_specs(current.spec, desired).changes):
        return False
    template = {"TaskTemplate": desired.get("TaskTemplate", {})}
    return any(t.failed and t.template is not None and not diff_specs({"TaskTemplate": t.template}, template)
               for t in observed.tasks_of(current.id))


def rollback_hold(ext: str, current: Service, desired: Mapping[str, Any],
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


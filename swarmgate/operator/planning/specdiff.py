"""The essence of a proxy service spec, and the difference between two of them (pure).

Docker stores more than it was given (defaults such as `Isolation`, `ForceUpdate`, `Runtime`, zero
values it omits, IDs next to names) and a person may legitimately touch the proxy service too. So
we never compare whole specs: both sides are first projected onto the fields the operator manages
(`MANAGED_PATHS`), with empty values (None, 0, "", [], {}) treated as absent the way Go's
`omitempty` does, lists that are sets sorted, and object references reduced to their names.
deepdiff compares those essences, and its output is translated at once into `SpecDiff`, so nothing
else depends on deepdiff's format.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deepdiff import DeepDiff

# Every field of a proxy ServiceSpec the operator sets. Anything else on the service is left as found.
MANAGED_PATHS: tuple[tuple[str, ...], ...] = (
    ("Name",),
    ("Labels",),
    ("TaskTemplate", "ContainerSpec", "Image"),
    ("TaskTemplate", "ContainerSpec", "Command"),
    ("TaskTemplate", "ContainerSpec", "Args"),
    ("TaskTemplate", "ContainerSpec", "Env"),
    ("TaskTemplate", "ContainerSpec", "Labels"),
    ("TaskTemplate", "ContainerSpec", "StopSignal"),
    ("TaskTemplate", "ContainerSpec", "StopGracePeriod"),
    ("TaskTemplate", "ContainerSpec", "Configs"),
    ("TaskTemplate", "ContainerSpec", "Secrets"),
    ("TaskTemplate", "Placement", "Constraints"),
    ("TaskTemplate", "Placement", "Preferences"),
    ("Mode",),
    ("UpdateConfig",),
    ("RollbackConfig",),
    ("EndpointSpec", "Ports"),
)
_SET_LIKE = {"Env", "Constraints"}
# IDs of referenced configs and secrets: content-addressed names already say everything.
_REFERENCE_IDS = {"ConfigID", "SecretID"}


@dataclass(frozen=True)
class Change:
    """One managed field that differs: its dotted path, and the value before and after."""

    path: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.path}: {_show(self.before)} -> {_show(self.after)}"


@dataclass(frozen=True)
class SpecDiff:
    changes: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(c.path for c in self.changes)


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT: Any = _Absent()


def _is_empty(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    return value is None or value == 0 or value in ("", [], {})


def _normalize(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        out = {k: _normalize(v, k) for k, v in sorted(value.items()) if k not in _REFERENCE_IDS}
        return {k: v for k, v in out.items() if not _is_empty(v)}
    if isinstance(value, list):
        items = [_normalize(v) for v in value]
        if key in _SET_LIKE:
            return sorted(set(items))
        if key in ("Configs", "Secrets"):
            # Keyed by the path it is mounted at, so a diff names the mount, not a list position.
            return {str(r.get("File", {}).get("Name", "")): r for r in items}
        return items
    return value


def _lookup(spec: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = spec
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def essence(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The managed fields of a spec, normalized: `{"TaskTemplate.ContainerSpec.Image": ...}`."""
    out: dict[str, Any] = {}
    for path in MANAGED_PATHS:
        value = _normalize(_lookup(spec, path), path[-1])
        if not _is_empty(value):
            out[".".join(path)] = value
    return out


def diff_specs(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> SpecDiff:
    found = DeepDiff(essence(observed), essence(desired), view="tree")
    changes: list[Change] = []
    for report in found.tree.values():
        for level in report:
            parts = level.path(output_format="list")
            path = parts[0] + "".join(f"[{p!r}]" for p in parts[1:])
            before = _ABSENT if type(level.t1).__name__ == "NotPresent" else level.t1
            after = _ABSENT if type(level.t2).__name__ == "NotPresent" else level.t2
            changes.append(Change(path=path, before=before, after=after))
    return SpecDiff(tuple(sorted(changes, key=lambda c: c.path)))


def merge_managed(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The spec to send in an update: what is on the service now, with every managed field replaced.

    Keeping the unmanaged rest means a setting a person made by hand (a resource limit, a log
    driver) survives our update instead of being reset to Docker's defaults.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(observed))
    for path in MANAGED_PATHS:
        value = _lookup(desired, path)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = copy.deepcopy(value)
    return merged

"""The essence of a proxy service spec, and the difference between two of them (pure).

Docker stores more than it was given (defaults such as `Isolation`, `ForceUpdate`, `Runtime`, IDs
next to names, zero values dropped) and a person may legitimately touch the proxy service too. So we
never compare whole specs, only their essence: the fields the operator manages.

What DeepDiff does, through its own options:

* `ignore_order_func`: `Env` and `Constraints` are sets. Their order (and a repeated entry) means
  nothing, so it is not a change.
* `exclude_regex_paths`: Docker adds `ConfigID`/`SecretID` next to the names we give. Our config
  names are content-addressed, and secret names are what we mount, so the IDs say nothing more.
* `exclude_obj_callback_strict`: Go's `omitempty`. Docker drops zero values (`0`, `""`, `false`,
  `null`, `[]`, `{}`) from what it returns, so an empty value and an absent one are the same field.
  The predicate (`_omitted`) is ours; DeepDiff applies it where both sides are empty.
* `threshold_to_diff_deeper=0`: always name the field that differs, never its whole parent object.

What is ours, and why:

* `MANAGED_PATHS`, the essence (derived from `service_spec`'s typed spec). The same list says what
  `merge_managed` replaces in an update (and so what it leaves as a person set it), so it is our
  data, not a DeepDiff `include_paths` option.
* Config and secret references are keyed by the file they are mounted at, and mounts by their
  target, so a change names the mount, not a list position. DeepDiff's `group_by` does this only for
  a list at the root. Their order means nothing to Docker, and the docker CLI reorders mounts (by
  target) on any `service update`, such as the seed's `--constraint-add`: a position is no change.
* DeepDiff's tree is translated at once into `SpecDiff`, with one path style: field names joined
  by dots, brackets for anything that is not a field name (`Configs["/etc/nginx/nginx.conf"]`,
  `Args[0]`). A member added to or removed from a set is reported on the set itself
  (`TaskTemplate.Placement.Constraints`), since its position means nothing. Nothing else depends on
  DeepDiff's format.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# deepdiff is imported when a diff is first made: importing it costs about as much CPU as reading a
# 1,000-service state file, and the offline commands that never diff (`render`, `routes`) skip it.
if TYPE_CHECKING:
    from deepdiff.model import DiffLevel

# Every field of a proxy ServiceSpec the operator sets, derived from the typed spec it writes
# (`service_spec.ServiceSpec`): what is compared is what is written. Anything else is left as found.
from swarmgate.operator.planning.service_spec import MANAGED_PATHS

_SETS = frozenset({"Env", "Constraints"})
_REFERENCES = frozenset({"Configs", "Secrets"})
_MOUNTS = "Mounts"
_REFERENCE_IDS = re.compile(r"\['(ConfigID|SecretID)'\]$")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


# The `before` of a field that appears, the `after` of one that goes away.
ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Change:
    """One managed field that differs: its path, and the value before and after."""

    path: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.path}: {self.before!r} -> {self.after!r}"


@dataclass(frozen=True)
class SpecDiff:
    changes: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(c.path for c in self.changes)


def _lookup(spec: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = spec
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _by_target(mounts: Any) -> Any:
    if not isinstance(mounts, list):
        return mounts
    return {str(m.get("Target", "")) if isinstance(m, Mapping) else str(i): m for i, m in enumerate(mounts)}


def _by_mount(refs: Any) -> Any:
    if not isinstance(refs, list):
        return refs
    return {str((ref.get("File") or {}).get("Name", "")) if isinstance(ref, Mapping) else str(i): ref
            for i, ref in enumerate(refs)}


def essence(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The managed fields of a spec, nested as in the spec; references keyed by where they are mounted."""
    out: dict[str, Any] = {}
    for path in MANAGED_PATHS:
        value = _lookup(spec, path)
        if value is None:
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if path[-1] in _REFERENCES:
            value = _by_mount(value)
        elif path[-1] == _MOUNTS:
            value = _by_target(value)
        node[path[-1]] = value
    return out


def _omitted(value: Any, _path: str = "") -> bool:
    """Go's `omitempty`: what Docker leaves out of its JSON, an object of only such values included."""
    from deepdiff.helper import notpresent

    if value is notpresent or value is None or value is False:
        return True
    if isinstance(value, Mapping):
        return all(_omitted(v) for v in value.values())
    return (isinstance(value, int | float) and value == 0) or value in ("", [])


def _is_set(level: DiffLevel) -> bool:
    parts = level.path(output_format="list")
    return bool(parts) and parts[-1] in _SETS


def _path_text(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, str) and _FIELD_NAME.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _change(level: DiffLevel) -> Change:
    from deepdiff.helper import notpresent

    parts = list(level.path(output_format="list"))
    if len(parts) >= 2 and isinstance(parts[-1], int) and parts[-2] in _SETS:
        parts.pop()  # a member of a set: its position means nothing
    return Change(
        path=_path_text(parts),
        before=ABSENT if level.t1 is notpresent else level.t1,
        after=ABSENT if level.t2 is notpresent else level.t2,
    )


def diff_specs(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> SpecDiff:
    from deepdiff import DeepDiff

    found = DeepDiff(
        essence(observed),
        essence(desired),
        view="tree",
        ignore_order_func=_is_set,
        exclude_regex_paths=[_REFERENCE_IDS],
        exclude_obj_callback_strict=_omitted,
        threshold_to_diff_deeper=0,
    )
    changes = [_change(level) for levels in found.tree.values() for level in levels]
    return SpecDiff(tuple(sorted(changes, key=lambda c: (c.path, repr(c.before), repr(c.after)))))


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

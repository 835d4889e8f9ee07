"""The offline state file of Engine API JSON (pure, apart from `load_state_file` which reads it).

`{"services": [...], "tasks": [...], "nodes": [...], "configs": [...], "secrets": [...]}` where each
list holds what the Engine API returns for `GET /services` and the like. `swarmgate render` and
`swarmgate routes` read it, and the unit tests use it for real Docker-shaped data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from swarmgate.errors import ConfigError, DocumentError
from swarmgate.models.settings.user_file import parse_user_text, read_user_file
from swarmgate.models.swarm.observed import ObservedState

_REQUIRED = ("services", "tasks", "nodes")
_OPTIONAL = ("configs", "secrets", "networks")


def state_file_document(
    *,
    services: Iterable[Any],
    tasks: Iterable[Any],
    nodes: Iterable[Any],
    configs: Iterable[Any] = (),
    secrets: Iterable[Any] = (),
    networks: Iterable[Any] = (),
) -> dict[str, list[Any]]:
    """The JSON document of a state file, for `swarmgate` to write and tests to build."""
    return {
        "services": list(services),
        "tasks": list(tasks),
        "nodes": list(nodes),
        "configs": list(configs),
        "secrets": list(secrets),
        "networks": list(networks),
    }


def parse_state(text: str, *, source: str, hold: list[object] | None = None) -> ObservedState:
    """The snapshot a state file's text describes. `hold`: a list the parsed JSON is appended to, for a
    process that ends without teardown (`swarmgate render`): freeing the Engine JSON object by object
    cost 0.035 s at 10,000 services, and the snapshot and route table built into the memory it freed
    took 0.08 s longer than in fresh memory (measured with bench/offline_stages.py)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a JSON object with services, tasks and nodes")
    if hold is not None:
        hold.append(document)
    unknown = sorted(set(document) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(
            f"{source}: {unknown[0]}: unknown key (expected services, tasks, nodes, configs, secrets, networks)"
        )
    for key in _REQUIRED:
        if key not in document:
            raise ConfigError(f"{source}: {key}: required key is missing")
    for key in (*_REQUIRED, *_OPTIONAL):
        if key in document and not isinstance(document[key], list):
            raise ConfigError(f"{source}: {key}: expected a list")
    try:
        return ObservedState.from_api(
            services=document["services"],
            tasks=document["tasks"],
            nodes=document["nodes"],
            configs=document.get("configs", ()),
            secrets=document.get("secrets", ()),
            networks=document.get("networks", ()),
        )
    except DocumentError as exc:  # a state file is the user's input: a bad one is a config error
        raise ConfigError(f"{source}: {exc}") from None


def load_state_file(path: str | Path, *, hold: list[object] | None = None) -> ObservedState:
    """Read one state file (the only I/O in this module); `hold`: as in `parse_state`."""
    text = read_user_file(path)
    return parse_user_text(lambda: parse_state(text, source=str(path), hold=hold), source=str(path), what="JSON")

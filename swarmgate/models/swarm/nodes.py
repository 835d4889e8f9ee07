"""A Swarm node as the snapshot sees it: where it is reached and whether it may run tasks (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    addr: str
    role: str
    availability: str
    state: str
    labels: Mapping[str, str] = field(default_factory=dict)

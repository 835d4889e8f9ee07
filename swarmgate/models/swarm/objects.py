"""The Swarm's named objects that services refer to: configs, networks and secrets (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SwarmConfig:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]
    data: bytes


@dataclass(frozen=True)
class SwarmNetwork:
    """One network as `GET /networks` lists it; only swarm-scoped overlays can carry routes."""

    id: str
    name: str
    driver: str
    scope: str
    ingress: bool = False

    @property
    def joinable(self) -> bool:
        """A service may join it: an overlay of the Swarm, not the routing mesh's own network."""
        return self.driver == "overlay" and self.scope == "swarm" and not self.ingress


@dataclass(frozen=True)
class SwarmSecret:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]

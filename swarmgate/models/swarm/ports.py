"""A published port, as a service declares it and as a task reports it (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PortBinding:
    target_port: int
    published_port: int
    protocol: str
    mode: str


"""A Swarm service as the snapshot sees it: its spec, what swarmgate reads from it, and how Swarm's
last update of it went (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarmgate.models.quick_init import quick_init
from swarmgate.models.swarm.ports import PortBinding


@dataclass(frozen=True)
class VirtualIP:
    """A service's virtual IP on one network (`Endpoint.VirtualIPs[]`), without the prefix length."""

    network_id: str
    address: str


# UpdateStatus.State values (Engine API 1.41): the update or the rollback Swarm runs, or ran last.
ROLLBACK_STATES = frozenset({"rollback_started", "rollback_paused", "rollback_completed"})
PAUSED_STATES = frozenset({"paused", "rollback_paused"})


@dataclass(frozen=True)
class UpdateStatus:
    """A service's `UpdateStatus`: `state` is updating, paused, completed or rollback_*."""

    state: str
    message: str = ""
    started_at: str = ""
    completed_at: str = ""

    @property
    def rolled_back(self) -> bool:
        """Swarm rolled (or is rolling) the service back from the spec it was given last."""
        return self.state in ROLLBACK_STATES

    @property
    def paused(self) -> bool:
        return self.state in PAUSED_STATES


@quick_init
@dataclass(frozen=True)
class Service:
    id: str
    name: str
    version: int
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    endpoint_ports: tuple[PortBinding, ...] = ()
    created_at: str = ""
    # What swarmgate reads from a service's Spec, lifted here so no other module digs into the raw
    # dict (the planner still diffs `spec` whole, for the proxy service it owns).
    env: tuple[str, ...] = ()  # Spec.TaskTemplate.ContainerSpec.Env, as given
    constraints: tuple[str, ...] = ()  # Spec.TaskTemplate.Placement.Constraints
    config_names: tuple[str, ...] = ()  # Spec.TaskTemplate.ContainerSpec.Configs[].ConfigName
    declared_ports: tuple[PortBinding, ...] = ()  # Spec.EndpointSpec.Ports (what was asked for)
    # Spec.TaskTemplate.Networks[].Target: network IDs (the daemon resolves names), in spec order
    networks: tuple[str, ...] = ()
    virtual_ips: tuple[VirtualIP, ...] = ()  # Endpoint.VirtualIPs (ingress included)
    update: UpdateStatus | None = None  # UpdateStatus: how Swarm's last update or rollback went
    previous_spec: Mapping[str, Any] | None = None  # PreviousSpec: what an update replaced (absent after
    # Swarm's own rollback: swarmkit then moves PreviousSpec back into Spec and clears it)

    def virtual_ip_on(self, network_id: str) -> str | None:
        return next((v.address for v in self.virtual_ips if v.network_id == network_id), None)

    def env_value(self, name: str) -> str | None:
        """The value of one `NAME=value` entry of the container's environment (the first one)."""
        return next((item.split("=", 1)[1] for item in self.env if item.startswith(name + "=")), None)

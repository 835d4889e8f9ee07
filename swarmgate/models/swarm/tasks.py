"""A Swarm task as the snapshot sees it: its state, the host ports it answers on, its networks (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarmgate.models.quick_init import quick_init
from swarmgate.models.swarm.ports import PortBinding


@quick_init
@dataclass(frozen=True)
class NetworkAttachment:
    """A task's place on one network (`Task.NetworksAttachments[]`): the network and the task's
    addresses on it, without the prefix length (`198.19.1.3/24` → `198.19.1.3`)."""

    network_id: str
    network_name: str
    addresses: tuple[str, ...]
    ingress: bool = False  # the routing mesh's network, which no service joins by name


@quick_init
@dataclass(frozen=True)
class Task:
    id: str
    service_id: str
    node_id: str
    slot: int | None
    desired_state: str
    state: str
    container_id: str | None
    ports: tuple[PortBinding, ...] = ()
    networks: tuple[NetworkAttachment, ...] = ()  # NetworksAttachments, sorted by network ID
    # The task's Spec: the service's TaskTemplate when Swarm made the task. A task that failed under
    # the template an update brought is what is left of that update once Swarm rolled it back.
    template: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def failed(self) -> bool:
        return self.state in ("failed", "rejected")

    def host_ports(self, target: int, publishes: int = 1) -> tuple[int, ...]:
        """The host ports a host-mode TCP publish of `target` answers on at the node's IPv4 address.

        Docker 20.10 binds each host-mode publish twice, IPv4 then IPv6, and `PortStatus` lists both
        in that order without saying which is which. Their ports are allocated apart: when the IPv4
        one is taken (by anything on the node) they differ, and the IPv6 port on the IPv4 address
        reaches whatever holds it there, or nothing (the lab test puts another backend there). So of
        twice `publishes` entries, every other one from the first is taken; of any other count, the
        first `publishes` (fewer upstreams is the safe side of not knowing). `publishes` is how many
        times the service's spec publishes `target` in host mode."""
        listed = [b.published_port for b in self.ports
                  if b.mode == "host" and b.protocol == "tcp" and b.target_port == target and b.published_port > 0]
        publishes = max(publishes, 1)
        chosen = listed[0::2] if len(listed) == 2 * publishes else listed[:publishes]
        return tuple(dict.fromkeys(chosen))

    def addresses_on(self, network_id: str) -> tuple[str, ...]:
        """The task's addresses on one network (none when it is not attached to it)."""
        return next((a.addresses for a in self.networks if a.network_id == network_id), ())

"""A frozen snapshot of the Swarm: every service, task, node, config, secret and network (pure).

`ObservedState.from_api` takes exactly what the Docker Engine API's lists return (API 1.41; read by
`engine_json`), so the operator's live pass and an offline state file go through the same code. The
types of its parts live in `services`, `tasks`, `nodes`, `objects` and `ports`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from swarmgate.models.swarm.engine_json import (
    configs_from_api,
    networks_from_api,
    nodes_from_api,
    secrets_from_api,
    services_from_api,
    tasks_from_api,
)
from swarmgate.models.swarm.nodes import Node
from swarmgate.models.swarm.objects import SwarmConfig, SwarmNetwork, SwarmSecret
from swarmgate.models.swarm.services import Service
from swarmgate.models.swarm.tasks import Task


@dataclass(frozen=True)
class ObservedState:
    """Everything one reconcile pass knows about the Swarm, each collection sorted by ID."""

    services: tuple[Service, ...] = ()
    tasks: tuple[Task, ...] = ()
    nodes: tuple[Node, ...] = ()
    configs: tuple[SwarmConfig, ...] = ()
    secrets: tuple[SwarmSecret, ...] = ()
    networks: tuple[SwarmNetwork, ...] = ()

    @classmethod
    def from_api(
        cls,
        *,
        services: Iterable[Any],
        tasks: Iterable[Any],
        nodes: Iterable[Any],
        configs: Iterable[Any] = (),
        secrets: Iterable[Any] = (),
        networks: Iterable[Any] = (),
    ) -> ObservedState:
        return cls(
            services=services_from_api(services),
            tasks=tasks_from_api(tasks),
            nodes=nodes_from_api(nodes),
            configs=configs_from_api(configs),
            secrets=secrets_from_api(secrets),
            networks=networks_from_api(networks),
        )

    # Lookups are indexed once per snapshot: a scan per service would make a pass quadratic in the
    # Swarm's size (1000 services: 150 ms of a 180 ms pass before the index).
    @functools.cached_property
    def _nodes_by_id(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    @functools.cached_property
    def _tasks_by_service(self) -> dict[str, tuple[Task, ...]]:
        grouped: dict[str, list[Task]] = {}
        for task in self.tasks:
            grouped.setdefault(task.service_id, []).append(task)
        return {service_id: tuple(tasks) for service_id, tasks in grouped.items()}

    def node(self, node_id: str) -> Node | None:
        return self._nodes_by_id.get(node_id)

    def service_named(self, name: str) -> Service | None:
        return self._services_by_name.get(name)

    @functools.cached_property
    def _services_by_name(self) -> dict[str, Service]:
        # Swarm keeps service names unique; were two listed, the first by ID would answer, as a scan did.
        out: dict[str, Service] = {}
        for s in self.services:
            out.setdefault(s.name, s)
        return out

    def tasks_of(self, service_id: str) -> tuple[Task, ...]:
        return self._tasks_by_service.get(service_id, ())

    def config_named(self, name: str) -> SwarmConfig | None:
        return next((c for c in self.configs if c.name == name), None)

    def network(self, name_or_id: str) -> SwarmNetwork | None:
        """A network by ID or by name, as `docker service create --network` takes either."""
        return self._networks_by_id.get(name_or_id) or self._networks_by_name.get(name_or_id)

    @functools.cached_property
    def _networks_by_id(self) -> dict[str, SwarmNetwork]:
        return {n.id: n for n in self.networks}

    @functools.cached_property
    def _networks_by_name(self) -> dict[str, SwarmNetwork]:
        # Names are unique among swarm-scoped networks; a node-local one of the same name comes second.
        out: dict[str, SwarmNetwork] = {}
        for n in sorted(self.networks, key=lambda n: (n.scope != "swarm", n.id)):
            out.setdefault(n.name, n)
        return out

"""The Docker Engine API calls the tests make again and again, with types.

The docker SDK's stubs leave most of these methods unannotated, so a call to one is an untyped call
and its answer is `Any`. Here, and only here, the tests call them (pyproject's mypy override for this
module says so, as it does for swarmgate's Docker edge) and say what comes back: the Engine API's
JSON objects, as dicts. Everything else in tests/ stays under mypy's strict rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import docker
from docker.models.services import Service

Filters = Mapping[str, str | list[str]]
JSON = dict[str, Any]


def tasks(client: docker.DockerClient, filters: Filters | None = None) -> list[JSON]:
    return cast(list[JSON], client.api.tasks(filters=filters))


def running_tasks(client: docker.DockerClient, service: str) -> list[JSON]:
    """The service's tasks that Swarm wants running and that do run."""
    return [t for t in tasks(client, {"service": service, "desired-state": "running"})
            if t["Status"]["State"] == "running"]


def services(client: docker.DockerClient, filters: Filters | None = None) -> list[JSON]:
    return cast(list[JSON], client.api.services(filters=filters))


def inspect_service(client: docker.DockerClient, service: str) -> JSON:
    """The service's inspect object (`Spec`, `Version`, `UpdateStatus`, `Endpoint`, ...), by name or ID."""
    return cast(JSON, client.api.inspect_service(service))


def create_service(client: docker.DockerClient, *, name: str, task_template: JSON,
                   labels: Mapping[str, str] | None = None, mode: JSON | None = None,
                   endpoint_spec: JSON | None = None) -> str:
    """Create a service from raw spec parts; its ID."""
    created = client.api.create_service(task_template=task_template, name=name, labels=labels, mode=mode,
                                        endpoint_spec=endpoint_spec)
    return str(created["ID"])


def remove_service(client: docker.DockerClient, service: str) -> None:
    client.api.remove_service(service)


def configs(client: docker.DockerClient, filters: Filters | None = None) -> list[JSON]:
    return cast(list[JSON], client.api.configs(filters=filters))


def inspect_config(client: docker.DockerClient, config: str) -> JSON:
    return cast(JSON, client.api.inspect_config(config))


def run_service(client: docker.DockerClient, image: str, **options: Any) -> Service:
    """`client.services.create`: a service from the SDK's keyword options (constraints, mounts, ...)."""
    return cast(Service, client.services.create(image, **options))


def scale(client: docker.DockerClient, service: str, replicas: int) -> None:
    client.services.get(service).scale(replicas)


def remove(service: Service) -> None:
    """Remove a service the SDK listed (`client.services.list(...)`)."""
    service.remove()


def service_tasks(service: Service) -> list[JSON]:
    return cast(list[JSON], service.tasks())

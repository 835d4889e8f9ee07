"""Observe: read one snapshot of the Swarm through the Docker API (I/O; one of the Docker edge's
modules, the only ones that import docker).

A pass makes a fixed number of list calls, whatever the number of services, tasks or nodes: no
inspect per object. The raw Engine API documents go straight into `ObservedState.from_api`, the same
constructor that reads an offline state file, so the live and offline paths cannot drift apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from swarmgate.errors import ConfigError, DocumentError, TemporaryError, TerminalError
from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.telemetry.calls import CallCounter

API_VERSION = "1.41"
# The low-level client, named here so the rest of the operator can type it without importing docker.
Api = docker.APIClient
# Errors that say "Docker is not answering right now" rather than "this request is wrong".
CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, OSError)




def connect(config: Config, *, timeout: float = 30.0) -> docker.APIClient:
    """`DockerURL` from the config, else `DOCKER_HOST`, else the local socket; TLS from the config."""
    url = config.docker_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    tls: docker.tls.TLSConfig | bool = False
    if config.tls_cert or config.tls_ca_cert:
        try:
            tls = docker.tls.TLSConfig(
                client_cert=(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None,
                ca_cert=config.tls_ca_cert,
                verify=not config.allow_insecure,
            )
        except docker.errors.TLSParameterError as exc:
            raise ConfigError(f"TLS settings: {exc}") from exc
        url = url.replace("tcp://", "https://")
    return docker.APIClient(base_url=url, version=API_VERSION, tls=tls, timeout=int(timeout))


def fetch_documents(api: docker.APIClient, calls: CallCounter | None = None) -> dict[str, list[dict[str, Any]]]:
    """The Engine API's own JSON for one snapshot: six list calls, whatever the Swarm's size.

    All configs are listed (a custom `Template` is a user's config); secrets come without data.
    """
    try:
        documents = {
            "services": api.services(),
            "tasks": api.tasks(),
            "nodes": api.nodes(),
            "configs": api.configs(),
            "secrets": api.secrets(),
            # Swarm-scoped networks only: a manager's node-local bridges route nothing of a service's.
            "networks": api.networks(filters={"scope": "swarm"}),
        }
    except docker.errors.APIError as exc:
        if calls is not None:
            calls.failed()
        raise TemporaryError(f"docker API: {exc.explanation or exc}") from exc
    except CONNECTION_ERRORS as exc:
        if calls is not None:
            calls.failed()
        raise TemporaryError(f"docker unreachable: {type(exc).__name__}") from exc
    if calls is not None:
        for call in documents:
            calls.count(call, write=False)
    return documents


def observe(api: docker.APIClient, calls: CallCounter | None = None) -> ObservedState:
    documents = fetch_documents(api, calls)
    try:
        return ObservedState.from_api(**documents)
    except DocumentError as exc:
        # Asking again returns the same document: not worth a fast retry, only the next resync.
        raise TerminalError(f"Docker answered a document swarmgate cannot read: {exc}") from None


_CONTAINER_IN_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)")


def own_container_id(mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The ID of the container this process runs in, or None outside a container.

    Docker bind-mounts the container's own hostname/hosts files from a folder named by its ID;
    that is readable without the API and without trusting the hostname, which a user may set.
    """
    try:
        text = mountinfo.read_text()
    except OSError:
        return None
    match = _CONTAINER_IN_MOUNT.search(text)
    return match.group(1) if match else None

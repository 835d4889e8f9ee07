"""What the pipeline needs to know about the program that runs it (reads package data, no Docker).

Live passes and the offline commands (`plan`, `render`, `routes`) take the same `Runtime`, so the
same config and snapshot render byte-identical configs whichever path asked.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from importlib import resources

from swarmgate import __version__

# The agent ships as package data of the delivery package; reading a file is not an import, so the
# layer table (planning below delivery) holds.
_AGENT_PACKAGE = "swarmgate.operator.delivery"
_AGENT_FILE = "agent.sh"


@dataclass(frozen=True)
class Runtime:
    server_info: str  # the x-server-info header value, Interlock's shape
    agent_script: bytes  # the proxy agent, shipped to proxies as a Swarm config


def server_info() -> str:
    """`swarmgate/0.1.0 linux/amd64`: our version and the machine's architecture in Go's names."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"swarmgate/{__version__} linux/{arch}"


@functools.cache
def current_runtime() -> Runtime:
    agent = resources.files(_AGENT_PACKAGE).joinpath(_AGENT_FILE).read_bytes()
    return Runtime(server_info=server_info(), agent_script=agent)

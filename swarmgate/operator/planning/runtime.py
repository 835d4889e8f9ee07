"""What the pipeline needs to know about the program that runs it (reads package data, no Docker).

Live passes and the offline commands (`plan`, `render`, `routes`) take the same `Runtime`, so the
same config and snapshot render byte-identical configs whichever path asked.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from swarmgate import __version__

# The proxy agent is package data beside this module: the planner ships it to every hitless proxy
# as a Swarm config (mounted at `proxyspec.AGENT_PATH`), so the package that embeds it owns it.
AGENT_SCRIPT: Final = Path(__file__).with_name("agent.sh")


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
    return Runtime(server_info=server_info(), agent_script=AGENT_SCRIPT.read_bytes())

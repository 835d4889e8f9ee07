"""What the operator pushes to and reads from a proxy task's control server (pure).

The agent side is `agent.sh`; the nginx side is `renderers/templates/control.conf.j2`. A proxy task
is addressed through its own node: the node's address and the host port Swarm published for the
extension's `TargetPort`, with `Host: swarmgate-control.invalid`. That needs host-mode publishing:
through the ingress routing mesh a request lands on any task, so one task cannot be addressed.

Protocol swarmgate/2:

- `PUT /swarmgate/v2/config`, body `swarmgate/2 config DIGEST\\n` + the config text (DIGEST: sha256
  hex of the text, the rendered config's own digest).
- `GET /swarmgate/v2/status`: `swarmgate/2 TASK ok DIGEST` (serves DIGEST, `-` for the bootstrap),
  or `swarmgate/2 TASK error REJECTED SERVED` followed by nginx's reason.

Both carry `Authorization: Bearer sha256:HEX`, the token digest the operator keeps as a label on
the token secret (the agent derives the same value from the secret it mounts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import is_owned
from swarmgate.renderers.nginx import CONTROL_HOST

PROTOCOL = "swarmgate/2"
CONFIG_PATH = "/swarmgate/v2/config"
STATUS_PATH = "/swarmgate/v2/status"
MAX_MESSAGE = 2000
_TASK_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ProxyTarget:
    """One running proxy task and where its control server answers."""

    extension: str
    task: str
    node: str
    hostname: str
    addr: str
    port: int


@dataclass(frozen=True)
class AgentStatus:
    """What a proxy task's agent says about itself."""

    task: str
    serving: str  # digest nginx serves; "" for the bootstrap
    rejected: str = ""  # set when the last config pushed was refused
    message: str = ""  # why (nginx -t's output), with `rejected`

    @property
    def ok(self) -> bool:
        return not self.rejected


def push_body(digest: str, text: str) -> bytes:
    return f"{PROTOCOL} config {digest}\n".encode() + text.encode()


def headers(token_digest: str) -> dict[str, str]:
    return {"Host": CONTROL_HOST, "Authorization": f"Bearer {token_digest}"}


def _digest_or_bootstrap(field: str) -> str | None:
    if field == "-":
        return ""
    return field if _DIGEST.fullmatch(field) else None


def parse_status(text: str) -> AgentStatus | None:
    """The agent's status, or None when the text is not one (an old agent, another server)."""
    first, _, rest = text.partition("\n")
    parts = first.split(" ")
    if len(parts) < 4 or parts[0] != PROTOCOL or not _TASK_ID.fullmatch(parts[1]):
        return None
    task, kind = parts[1], parts[2]
    if kind == "ok" and len(parts) == 4:
        serving = _digest_or_bootstrap(parts[3])
        return None if serving is None else AgentStatus(task=task, serving=serving)
    if kind == "error" and len(parts) == 5:
        rejected, serving = _digest_or_bootstrap(parts[3]), _digest_or_bootstrap(parts[4])
        if rejected is None or serving is None:
            return None
        # A file that was no swarmgate/2 config at all is rejected as "-": still a rejection.
        return AgentStatus(task=task, serving=serving, rejected=rejected or "-",
                           message=rest.strip()[:MAX_MESSAGE])
    return None


def proxy_targets(config: Config, observed: ObservedState) -> dict[str, list[ProxyTarget]]:
    """Per hitless host-mode extension, its owned proxy service's running tasks, each with the node
    address and the host port published for the extension's `TargetPort`."""
    out: dict[str, list[ProxyTarget]] = {}
    for name, ext in sorted(config.extensions.items()):
        if not ext.hitless_service_update or ext.publish_mode != "host":
            continue
        service = observed.service_named(ext.proxy_service_name)
        if service is None or not is_owned(service.labels):
            continue
        targets: list[ProxyTarget] = []
        for task in observed.tasks_of(service.id):
            node = observed.node(task.node_id)
            if task.desired_state != "running" or task.state != "running" or node is None or not node.addr:
                continue
            port = next(iter(task.host_ports(ext.target_port)), None)
            # Swarm can forget a running task's PortStatus: seen on the lab after the manager whose
            # dispatcher the LB node used was lost (the task kept running, its ports empty). A fixed
            # host-mode port is bound exactly as configured, so the spec says where the task listens.
            port = port or ext.published_port or None
            if port is not None:
                targets.append(ProxyTarget(name, task.id, node.id, node.hostname, node.addr, port))
        out[name] = targets
    return out

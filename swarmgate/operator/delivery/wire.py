"""What the operator pushes to and reads from a proxy task's control server (pure).

The agent side is `planning/agent.sh` (the planner ships it to the proxies); the nginx side is
`renderers/templates/control.conf.j2` plus the file the agent writes itself. A proxy task is
addressed through its own node: the node's address and the host port Swarm published for the
extension's `TargetSSLPort`, over TLS with SNI and Host `swarmgate-control.invalid`, both ends
proving they hold the channel key (`channel_key`). That needs host-mode publishing: through the
ingress routing mesh a request lands on any task.

Protocol swarmgate/3:

- `PUT /swarmgate/v3/config`, body `swarmgate/3 config TASK TERM SEQ DIGEST MAC\\n` + the config
  text. DIGEST is the text's sha256; MAC the channel key's HMAC-SHA256 of the header before ` MAC`.
  The agent applies a push only for its own TASK and only if (TERM, SEQ) is newer than every push
  it accepted before: a captured push cannot be replayed, altered or aimed at another task, and a
  deposed leader (older TERM) is refused.
- `GET /swarmgate/v3/status`: `swarmgate/3 status TASK ok SERVED TERM SEQ`, or `... error REJECTED
  SERVED TERM SEQ` followed by nginx's reason, or `... waiting PENDING SERVED TERM SEQ` followed by
  `waiting: N certificate files` (the push PENDING waits for the certificate courier's files: not a
  rejection), then the line `swarmgate/3 mac HEX` over all that.
  TERM SEQ is the newest push the agent accepted (its fence).
- `PUT /swarmgate/v3/key` (`rekey_body`): a new generation of the channel key, `swarmgate/3 key TASK
  GEN SUM MAC0 MAC\n` + the new key file. SUM is the key file's sha256; MAC0 the bootstrap key's
  (the Swarm secret's) HMAC of `swarmgate/3 key-origin GEN SUM`, which lets the agent check a saved
  key at start; MAC the current key's HMAC of the header before ` MAC`. The agent takes it only for
  its own TASK and a GEN above its current one, then serves the control server with the new
  certificate (the operator learns the generation from which certificate the handshake accepts),
  verifies pushes and signs statuses with the new key, and starts its fence over at `0 0`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import is_owned
from swarmgate.operator.delivery.channel_key import ChannelKey

PROTOCOL = "swarmgate/3"
CONFIG_PATH = "/swarmgate/v3/config"
STATUS_PATH = "/swarmgate/v3/status"
KEY_PATH = "/swarmgate/v3/key"
MAX_MESSAGE = 2000
_TASK_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NUMBER = re.compile(r"0|[1-9][0-9]{0,17}")
_MAC_LINE = re.compile(rf"{re.escape(PROTOCOL)} mac ([0-9a-f]{{64}})\n?")


class ForgedStatus(ValueError):
    """A status that does not carry the channel key's MAC (or is not a status at all)."""


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
    """What a proxy task's agent says about itself (signed with the channel key)."""

    task: str
    serving: str  # digest nginx serves; "" for the bootstrap
    rejected: str = ""  # set when the last config pushed was refused
    message: str = ""  # why (nginx -t's output), with `rejected`; what it waits for, with `waiting`
    term: int = 0  # the newest push the agent accepted: its fence
    seq: int = 0
    waiting: str = ""  # a push the agent holds until the certificate files it names exist

    @property
    def ok(self) -> bool:
        return not self.rejected


def push_header(*, task: str, term: int, seq: int, digest: str) -> str:
    """The signed part of a push's first line."""
    if not _TASK_ID.fullmatch(task) or not _DIGEST.fullmatch(digest):
        raise ValueError("a push names a task ID and a sha256 hex digest")
    if not (_NUMBER.fullmatch(str(term)) and _NUMBER.fullmatch(str(seq))):
        raise ValueError("term and sequence are non-negative and at most 18 digits")
    return f"{PROTOCOL} config {task} {term} {seq} {digest}"


def push_body(key: ChannelKey, *, task: str, term: int, seq: int, digest: str, text: str) -> bytes:
    header = push_header(task=task, term=term, seq=seq, digest=digest)
    return f"{header} {key.mac(header.encode())}\n".encode() + text.encode()


def rekey_body(current: ChannelKey, bootstrap: ChannelKey, new: ChannelKey, *, task: str, generation: int) -> bytes:
    """A rekey for one task: `new` becomes its channel key, generation `generation` (the bootstrap
    key, the Swarm secret, is generation 0). Signed with the task's `current` key; MAC0 proves to the
    agent, at any later start, that a holder of `bootstrap` made it."""
    if not _TASK_ID.fullmatch(task):
        raise ValueError("a rekey names a task ID")
    if generation < 1 or not _NUMBER.fullmatch(str(generation)):
        raise ValueError("a key generation is at least 1 and at most 18 digits")
    text = new.file_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    origin = bootstrap.mac(f"{PROTOCOL} key-origin {generation} {digest}".encode())
    header = f"{PROTOCOL} key {task} {generation} {digest} {origin}"
    return f"{header} {current.mac(header.encode())}\n".encode() + text.encode()


def _digest_or_bootstrap(field: str) -> str | None:
    if field == "-":
        return ""
    return field if _DIGEST.fullmatch(field) else None


def verify_status(raw: bytes, key: ChannelKey) -> AgentStatus:
    """The agent's status, once its MAC is checked; `ForgedStatus` for anything else."""
    cut = raw.rfind(f"{PROTOCOL} mac ".encode())
    if cut <= 0 or raw[cut - 1:cut] != b"\n":
        raise ForgedStatus("no mac line")
    body, mac_line = raw[:cut], raw[cut:].decode("ascii", "replace")
    match = _MAC_LINE.fullmatch(mac_line)
    if match is None or not key.verify(body, match.group(1)):
        raise ForgedStatus("the mac does not verify")
    status = parse_status(body.decode("utf-8", "replace"))
    if status is None:
        raise ForgedStatus("signed, but not a status")
    return status


def parse_status(text: str) -> AgentStatus | None:
    """The status in a verified body, or None when the text is not one."""
    first, _, rest = text.partition("\n")
    parts = first.split(" ")
    if len(parts) < 7 or parts[:2] != [PROTOCOL, "status"] or not _TASK_ID.fullmatch(parts[2]):
        return None
    task, kind, fields = parts[2], parts[3], parts[4:]
    if not (_NUMBER.fullmatch(fields[-2]) and _NUMBER.fullmatch(fields[-1])):
        return None
    term, seq = int(fields[-2]), int(fields[-1])
    if kind == "ok" and len(fields) == 3:
        serving = _digest_or_bootstrap(fields[0])
        return None if serving is None else AgentStatus(task=task, serving=serving, term=term, seq=seq)
    if kind == "waiting" and len(fields) == 4:
        pending, serving = _digest_or_bootstrap(fields[0]), _digest_or_bootstrap(fields[1])
        if not pending or serving is None:
            return None
        return AgentStatus(task=task, serving=serving, waiting=pending, message=rest.strip()[:MAX_MESSAGE],
                           term=term, seq=seq)
    if kind == "error" and len(fields) == 4:
        rejected, serving = _digest_or_bootstrap(fields[0]), _digest_or_bootstrap(fields[1])
        if rejected is None or serving is None:
            return None
        # A file that was no swarmgate/3 config at all is rejected as "-": still a rejection.
        return AgentStatus(task=task, serving=serving, rejected=rejected or "-",
                           message=rest.strip()[:MAX_MESSAGE], term=term, seq=seq)
    return None


def proxy_targets(config: Config, observed: ObservedState) -> dict[str, list[ProxyTarget]]:
    """Per hitless host-mode extension, its owned proxy service's running tasks, each with the node
    address and the host port published for the extension's `TargetSSLPort` (the control server's)."""
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
            port = next(iter(task.host_ports(ext.target_ssl_port)), None)
            # Swarm can forget a running task's PortStatus: seen on the lab after the manager whose
            # dispatcher the LB node used was lost (the task kept running, its ports empty). A fixed
            # host-mode port is bound exactly as configured, so the spec says where the task listens.
            port = port or ext.published_ssl_port or None
            if port is not None:
                targets.append(ProxyTarget(name, task.id, node.id, node.hostname, node.addr, port))
        out[name] = targets
    return out

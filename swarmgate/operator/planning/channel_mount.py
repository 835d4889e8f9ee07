"""The channel key's secrets in the operator's own service: which names they have, and the one
update that mounts the ones it lacks (pure)."""

from __future__ import annotations

import copy

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_SECRET_NAME
from swarmgate.models.swarm.tasks import Task
from swarmgate.operator.planning.actions import MountChannelSecret


def is_channel_secret(name: str) -> bool:
    """`swarmgate-channel` (generation 0) or `swarmgate-channel-N` (a rotated generation)."""
    rest = name.removeprefix(CHANNEL_SECRET_NAME)
    return rest == "" or (rest.startswith("-") and rest[1:].isdigit() and not rest[1:].startswith("0"))


def own_channel_mount(observed: ObservedState, own_task: Task | None) -> MountChannelSecret | None:
    """The mount an operator running as a Swarm task needs once a channel key's secret exists that
    its service does not mount yet (each at /run/secrets/<its name>)."""
    if own_task is None:
        return None
    service = next((s for s in observed.services if s.id == own_task.service_id), None)
    if service is None:
        return None
    spec = copy.deepcopy(dict(service.spec))
    container = spec.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
    refs = container.get("Secrets") or []
    mounted = {ref.get("SecretName") for ref in refs}
    missing = sorted(s.name for s in observed.secrets if is_channel_secret(s.name) and s.name not in mounted)
    if not missing:
        return None
    container["Secrets"] = [*refs, *({"SecretName": name, "File": {"Name": name, "UID": "0", "GID": "0",
                                                                     "Mode": 0o400}} for name in missing)]
    return MountChannelSecret(service.id, service.name, service.version, spec, tuple(missing))


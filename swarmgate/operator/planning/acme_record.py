"""The ACME account's public thumbprint, recorded in the Swarm for the commands that hold no key (pure).

Every proxy's config answers HTTP-01 with `token.thumbprint` (`acme_account`), and the thumbprint
comes from the account key, which only an operator holding the channel key can derive. The offline
commands (`swarmgate render`, `routes`, `plan --state`) and a `plan` or `status` run without the key
would otherwise render a config without the challenge location: another digest than the live pass's.

So the leader records the thumbprint, which is public (every challenge answer shows it), in an owned
Swarm config `swarmgate-acme-account-<digest>`, labelled with the directory it is for. `decide_pass`
renders with the thumbprint it is given (the live pass's, from its key) or else with the one recorded
for the configured directory: the same text, the same digest. The leader creates the record when it
is missing and removes records that name another account or directory. A state file written by
`swarmgate snapshot` carries the record with the other configs.
"""

from __future__ import annotations

import hashlib
from typing import Final

from swarmgate.models.routing.acme_hosts import THUMBPRINT
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import KIND_LABEL, is_owned, owned_labels
from swarmgate.operator.planning.actions import CreateConfig, RemoveConfig
from swarmgate.operator.planning.certificates import DIRECTORY_LABEL
from swarmgate.operator.planning.desired import ConfigObject

KIND_ACME_ACCOUNT: Final = "acme-account"
THUMBPRINT_LABEL: Final = "swarmgate.acme.account-thumbprint"
RECORD_PREFIX: Final = "swarmgate-acme-account-"


def record_name(directory: str, thumbprint: str) -> str:
    return RECORD_PREFIX + hashlib.sha256(f"{directory}\n{thumbprint}".encode()).hexdigest()[:12]


def _records(observed: ObservedState) -> list[tuple[str, str, str, str]]:
    """(name, ID, directory, thumbprint) of every well-formed owned record, sorted by name."""
    found = []
    for cfg in observed.configs:
        labels = cfg.labels
        if not is_owned(labels) or labels.get(KIND_LABEL) != KIND_ACME_ACCOUNT:
            continue
        directory, thumb = labels.get(DIRECTORY_LABEL, ""), labels.get(THUMBPRINT_LABEL, "")
        if directory and THUMBPRINT.fullmatch(thumb) and cfg.name == record_name(directory, thumb):
            found.append((cfg.name, cfg.id, directory, thumb))
    return sorted(found)


def recorded_thumbprint(observed: ObservedState, directory: str | None) -> str | None:
    """The thumbprint recorded for `directory` (the first by name, should a stale record remain)."""
    if directory is None:
        return None
    return next((thumb for _, _, d, thumb in _records(observed) if d == directory), None)


def record_actions(observed: ObservedState, directory: str, thumbprint: str) -> list[CreateConfig | RemoveConfig]:
    """What makes the Swarm's records say `thumbprint` for `directory`, and nothing else."""
    name = record_name(directory, thumbprint)
    records = _records(observed)
    actions: list[CreateConfig | RemoveConfig] = []
    if all(r[0] != name for r in records):
        labels = {**owned_labels(kind=KIND_ACME_ACCOUNT), DIRECTORY_LABEL: directory, THUMBPRINT_LABEL: thumbprint}
        actions.append(CreateConfig("", ConfigObject(name, thumbprint.encode(), labels)))
    actions += [RemoveConfig(config_id, other) for other, config_id, _, _ in records if other != name]
    return actions

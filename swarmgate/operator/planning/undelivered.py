"""Certificate secrets the courier did not deliver: set aside, then tried again (pure: `now` is passed in).

A proxy's agent rejects a config whose certificate files the courier has not brought within its
wait (`undelivered_secret`); the pass then sets aside the services that name those secret IDs, so the
other routes go on. Unlike a certificate nginx cannot load (its content never changes under its ID),
an undelivered file is often a passing fault: a courier task that was slow to start, a node that was
down. So each such ID is tried again `RETRY_AFTER` after it was learnt: the services come back, the
config that names it is pushed again (the proxies are told they may take a digest they rejected,
`ProxyState.allow_repush`), and the agent either finds the file or rejects it once more after its
wait. During `GRACE` after a retry, a rejection that names the ID is the old one, still shown by the
proxy's status, and is not believed; after it, the ID is learnt again and waits another `RETRY_AFTER`.

Without a time (an offline command), nothing is retried: the IDs are kept as learnt.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Final

RETRY_AFTER: Final = datetime.timedelta(minutes=5)
# Longer than the agent's wait for certificate files (SWARMGATE_CERT_WAIT, 120 s) plus a push.
GRACE: Final = datetime.timedelta(minutes=3)


@dataclass(frozen=True)
class Undelivered:
    """The IDs set aside and since when; the IDs tried again and when; those tried in this pass."""

    since: Mapping[str, datetime.datetime] = field(default_factory=dict)
    retried: Mapping[str, datetime.datetime] = field(default_factory=dict)
    retrying_now: frozenset[str] = frozenset()

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self.since)

    @property
    def next_retry(self) -> datetime.datetime | None:
        """When the next ID is tried again (the loop wakes up for it)."""
        return min((t + RETRY_AFTER for t in self.since.values()), default=None)


def learn_undelivered(known: Undelivered, named: Iterable[str], present: Set[str],
                      now: datetime.datetime | None) -> Undelivered:
    """The next pass's undelivered IDs: `named` by the proxies' current rejections, kept while the
    secret is `present`; with `now`, those set aside for `RETRY_AFTER` are tried again."""
    since = {i: t for i, t in known.since.items() if i in present}
    retried = {i: t for i, t in known.retried.items() if i in present}
    for secret_id in set(named) & present:
        if secret_id in since:
            continue
        tried = retried.get(secret_id)
        if now is not None and tried is not None and now < tried + GRACE:
            continue  # the rejection from before the retry, still in the proxy's status
        retried.pop(secret_id, None)
        # Offline (no time) an ID is kept as learnt; a time-less entry is retried once a time is known.
        since[secret_id] = now if now is not None else datetime.datetime.min.replace(tzinfo=datetime.UTC)
    retrying: set[str] = set()
    if now is not None:
        for secret_id, learnt in list(since.items()):
            if now >= learnt + RETRY_AFTER:
                del since[secret_id]
                retried[secret_id] = now
                retrying.add(secret_id)
        retried = {i: t for i, t in retried.items() if now < t + GRACE}
    return Undelivered(since, retried, frozenset(retrying))


def from_ids(ids: Iterable[str], now: datetime.datetime | None) -> Undelivered:
    """Known IDs without their times (a memory made by hand): learnt at `now`."""
    at = now if now is not None else datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return Undelivered({i: at for i in ids})

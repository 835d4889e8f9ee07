"""The ACME parts of a pass that need the running operator: the account key, derived from the
channel key in memory; whether the proxies answer challenges yet; what `/v1/status` says (I/O-free,
but holds a private key, so it lives with the running operator rather than in planning)."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec

from swarmgate.models.settings.config import Config
from swarmgate.operator.delivery.channel_holder import ChannelKeyHolder
from swarmgate.operator.planning import acme_account, certificates
from swarmgate.operator.planning.decide import PassDecision, Reported
from swarmgate.operator.planning.desired import DesiredState


class AcmeAccount:
    """The ACME account key: a function of the channel key of generation 0 (the keyring's bootstrap
    key, which rotation never changes) and `ACMEDirectory`. Kept in this process's memory only; its
    thumbprint is public and goes into every proxy's config."""

    def __init__(self) -> None:
        self._for: bytes | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self.thumbprint: str | None = None

    def __repr__(self) -> str:
        return f"AcmeAccount(thumbprint={self.thumbprint!r})"

    def key(self, config: Config, channel: ChannelKeyHolder | None) -> ec.EllipticCurvePrivateKey | None:
        """The account key for this pass (None: no ACMEDirectory, or no channel key held yet)."""
        ring = channel.keyring() if channel is not None and config.acme_directory is not None else None
        bootstrap = ring.bootstrap if ring is not None else None
        if bootstrap is None or config.acme_directory is None:
            self._for, self._key, self.thumbprint = None, None, None
            return None
        # Derived once per (key, directory): the derivation is cheap, but a pass every 250 ms need not redo it.
        marker = hashlib.sha256(bootstrap.hmac_key + b"\n" + config.acme_directory.encode()).digest()
        if marker != self._for:
            self._key = acme_account.account_key(bootstrap.hmac_key, config.acme_directory)
            self.thumbprint = acme_account.thumbprint(self._key)
            self._for = marker
        return self._key


def challenges_served(desired: DesiredState, reported: Reported, *, pushed: bool) -> bool:
    """Whether every proxy serves this pass's config (hence its challenge location). An operator
    that hears no statuses (`pushed` False: plain delivery) cannot know, and orders anyway."""
    if not pushed:
        return True
    return all(reported.served.get(e.name) == e.rendered.digest for e in desired.extensions
               if e.hitless and e.problem is None)


# How long orders wait for every proxy to serve the config with the challenge location. One proxy
# task that never takes a push (its node partitioned, its agent stuck) must not stop issuance for
# every host: after this, orders go ahead, and the CA may meet that proxy and fail the order, which
# then backs off like any failed order.
ORDER_WAIT_SECONDS = 60.0
Gate = Literal["served", "overdue", "wait"]


class ChallengeGate:
    """When due orders may go to the worker: once every proxy serves the challenge location
    (`served`), or once they have waited `wait` seconds for it (`overdue`)."""

    def __init__(self, wait: float = ORDER_WAIT_SECONDS) -> None:
        self.wait = wait
        self._since: float | None = None

    def check(self, *, pending: bool, served: bool, now: float) -> Gate:
        if not pending or served:
            self._since = None
            return "served"
        if self._since is None:
            self._since = now
        return "overdue" if now - self._since >= self.wait else "wait"


def lagging_extensions(desired: DesiredState, reported: Reported) -> list[str]:
    """The extensions not every proxy of which serves this pass's config (for the log)."""
    return [e.name for e in desired.extensions if e.hitless and e.problem is None
            and reported.served.get(e.name) != e.rendered.digest]


def acme_status(config: Config, decision: PassDecision, now: datetime.datetime,
                busy: frozenset[str], thumbprint: str | None = None) -> dict[str, Any]:
    """`/v1/status`'s `acme`: per host, what it serves, when it renews, and its failures in a row;
    the account's public thumbprint (None: no channel key held, so no challenge is answered and
    nothing is ordered)."""
    if config.acme_directory is None:
        return {}
    issued = decision.acme.issued
    memory = decision.memory.acme.memory
    hosts: dict[str, Any] = {}
    for host in decision.acme.wanted:
        best = certificates.serving(host, issued, now, config.acme_directory)
        failure = memory.failures.get(host)
        hosts[host] = {
            "certificate": best.secret_name if best else None,
            "not_after": certificates.format_time(best.not_after) if best else None,
            "renew_at": certificates.format_time(best.renew_at) if best else None,
            "ordering": host in busy,
            "failures": failure.count if failure else 0,
            "last_error": failure.reason if failure else None,
            "retry_at": certificates.format_time(failure.retry_at) if failure else None,
        }
    next_due = decision.acme.next_due
    budget = {"orders_per_hour": config.acme_orders_per_hour,
              "placed_last_hour": len(decision.memory.acme.ledger.recent(now).placed),
              "deferred": list(decision.acme.deferred)}
    return {"acme": {"directory": config.acme_directory, "account_thumbprint": thumbprint, "hosts": hosts,
                     "next_due": certificates.format_time(next_due) if next_due else None, "budget": budget}}

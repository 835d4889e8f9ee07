"""Which hosts need an ACME order now, and which issued certificates can go (pure: `now` is passed in).

Every issued certificate lives in its own Swarm secret, which the operator creates: Swarm's only
private store (the API lists a secret's labels, never its data). The labels carry the public facts
about the certificate: its host, validity, SHA-256 and the ACME directory that issued it. So an
operator that restarts, or a standby that takes over, reads from one secret listing what is issued
and never orders a certificate it already has.

The rules:

* A host is due when no certificate from the configured directory is fresh for it: none at all, or
  the newest is at two thirds of its lifetime (`renew_at`). Two thirds leave a third of the lifetime
  to retry in (30 days of a 90-day certificate; 100 s of a 5-minute one from a test CA).
* A certificate that is not valid yet (a CA clock a little ahead of ours) counts as fresh: ordering
  again would not help, and each pass would order another.
* After a failed order a host waits: one minute, doubling with each failure in a row, at most six
  hours. The failures live in `AcmeMemory`, in the operator process only: a new operator starts
  with none, which at worst retries a failing host one time early.
* A certificate is obsolete when its host is no longer wanted, or when it has expired and a newer
  certificate of the same host exists. The newest certificate of a wanted host is kept even expired:
  it is still the one to serve until an order succeeds.

Secrets whose labels are missing or malformed are not ours to read (`IssuedCert.from_labels` gives
None): they are left alone, never deleted.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

# `issuable` lives with the route table, which sets aside the hosts it refuses.
from swarmgate.models.routing.acme_hosts import issuable
from swarmgate.models.swarm.ownership import KIND_LABEL, is_owned, owned_labels

KIND_ACME_CERTIFICATE: Final = "acme-certificate"
HOST_LABEL: Final = "swarmgate.acme.host"
NOT_BEFORE_LABEL: Final = "swarmgate.acme.not-before"
NOT_AFTER_LABEL: Final = "swarmgate.acme.not-after"
SHA256_LABEL: Final = "swarmgate.acme.certificate-sha256"
DIRECTORY_LABEL: Final = "swarmgate.acme.directory"

SECRET_PREFIX: Final = "swarmgate-acme-"
# Swarm secret names are at most 64 characters: prefix (15) + host part + "-" + 12 digest digits.
_NAME_HOST_CHARS: Final = 64 - len(SECRET_PREFIX) - 1 - 12
_SECRET_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]*[a-zA-Z0-9])?")
_SHA256 = re.compile(r"[0-9a-f]{64}")

RENEW_FRACTION: Final = 2 / 3
FIRST_BACKOFF: Final = datetime.timedelta(minutes=1)
MAX_BACKOFF: Final = datetime.timedelta(hours=6)


def _utc(value: datetime.datetime) -> datetime.datetime:
    if value.tzinfo is None:
        raise ValueError("certificate times must carry a time zone")
    return value.astimezone(datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    """RFC 3339 UTC, whole seconds (what X.509 holds)."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(datetime.UTC) if parsed.tzinfo is not None else None


def secret_name(host: str, sha256: str) -> str:
    """`swarmgate-acme-<host, shortened>-<digest prefix>`: one secret per issuance, readable in
    `docker secret ls`, unique by the certificate's digest."""
    short = host[:_NAME_HOST_CHARS].strip(".-")
    return f"{SECRET_PREFIX}{short}-{sha256[:12]}"


@dataclass(frozen=True, order=True)
class IssuedCert:
    """One issued certificate, as its secret's labels describe it (times are UTC)."""

    host: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    sha256: str
    secret_name: str
    directory: str

    @property
    def lifetime(self) -> datetime.timedelta:
        return self.not_after - self.not_before

    @property
    def renew_at(self) -> datetime.datetime:
        return self.not_before + self.lifetime * RENEW_FRACTION

    def expired(self, now: datetime.datetime) -> bool:
        return now >= self.not_after

    def fresh(self, now: datetime.datetime) -> bool:
        """Not yet at two thirds of its lifetime: nothing to order."""
        return now < self.renew_at

    def usable(self, now: datetime.datetime) -> bool:
        """Inside its validity: what a client accepts today."""
        return self.not_before <= now < self.not_after

    @classmethod
    def from_labels(cls, name: str, labels: Mapping[str, str] | None) -> IssuedCert | None:
        """The certificate a secret describes, or None when it is not one of ours or its labels are
        missing or malformed (such a secret is ignored: never read, never deleted)."""
        if labels is None or not is_owned(labels) or labels.get(KIND_LABEL) != KIND_ACME_CERTIFICATE:
            return None
        host, sha, directory = labels.get(HOST_LABEL, ""), labels.get(SHA256_LABEL, ""), labels.get(DIRECTORY_LABEL)
        not_before, not_after = _parse_time(labels.get(NOT_BEFORE_LABEL)), _parse_time(labels.get(NOT_AFTER_LABEL))
        if (not issuable(host) or not _SHA256.fullmatch(sha) or not directory or not _SECRET_NAME.fullmatch(name)
                or not_before is None or not_after is None or not_after <= not_before):
            return None
        return cls(host, not_before, not_after, sha, name, directory)


def labels_for(cert: IssuedCert) -> dict[str, str]:
    """The labels of the secret that holds `cert`: ownership and the public facts, nothing secret."""
    return {
        **owned_labels(kind=KIND_ACME_CERTIFICATE),
        HOST_LABEL: cert.host,
        NOT_BEFORE_LABEL: format_time(cert.not_before),
        NOT_AFTER_LABEL: format_time(cert.not_after),
        SHA256_LABEL: cert.sha256,
        DIRECTORY_LABEL: cert.directory,
    }


def describe(host: str, chain_pem: str, directory: str) -> IssuedCert:
    """The `IssuedCert` of a chain just issued for `host`: the leaf (first certificate) decides."""
    # Imported here: only an issued chain needs it, and a pass or `swarmgate render` otherwise would
    # pay for loading cryptography's X.509 at every start.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    leaf = chain[0]
    sha = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    # X.509 holds whole seconds; the labels do too, so a cert described twice compares equal.
    return IssuedCert(host, leaf.not_valid_before_utc, leaf.not_valid_after_utc, sha, secret_name(host, sha),
                      directory)


def secret_data(chain_pem: str, key_pem: str) -> bytes:
    """What the certificate's secret holds: the chain, then its key (nginx reads both from one file,
    and `com.docker.lb.ssl_cert`/`ssl_key` may name the same secret)."""
    return (chain_pem.rstrip("\n") + "\n" + key_pem.rstrip("\n") + "\n").encode()


def issued_from(secrets: Iterable[tuple[str, Mapping[str, str] | None]]) -> tuple[IssuedCert, ...]:
    """Every certificate described by a listing of secrets (name, labels), sorted."""
    return tuple(sorted(c for name, labels in secrets if (c := IssuedCert.from_labels(name, labels)) is not None))


# --- the memory of failures -----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Failed orders of one host in a row: how many, the last one's time and reason."""

    count: int
    last_at: datetime.datetime
    reason: str

    @property
    def retry_at(self) -> datetime.datetime:
        # 1, 2, 4 ... minutes; the exponent is capped before it is raised (no huge integers).
        doublings: int = min(max(self.count - 1, 0), 16)
        wait: datetime.timedelta = min(FIRST_BACKOFF * (1 << doublings), MAX_BACKOFF)
        return self.last_at + wait


@dataclass(frozen=True)
class AcmeMemory:
    """What the leading operator remembers between passes about orders that failed, by host."""

    failures: Mapping[str, Failure] = field(default_factory=dict)

    def failed(self, host: str, now: datetime.datetime, reason: str) -> AcmeMemory:
        before = self.failures.get(host)
        count = 1 if before is None else before.count + 1
        return AcmeMemory({**self.failures, host: Failure(count, _utc(now), reason)})

    def succeeded(self, host: str) -> AcmeMemory:
        if host not in self.failures:
            return self
        return AcmeMemory({h: f for h, f in self.failures.items() if h != host})

    def keep_only(self, hosts_wanted: Iterable[str]) -> AcmeMemory:
        """Forget hosts no longer wanted, so the memory never outgrows the routes."""
        wanted = set(hosts_wanted)
        if set(self.failures) <= wanted:
            return self
        return AcmeMemory({h: f for h, f in self.failures.items() if h in wanted})


# --- the decisions --------------------------------------------------------------------------------

OrderReason = Literal["missing", "renewal"]


@dataclass(frozen=True, order=True)
class Order:
    """Order a certificate for `host` now: it has none fresh from this directory (`missing`: none
    unexpired; `renewal`: the newest is past two thirds of its lifetime). `failures` in a row so far."""

    host: str
    reason: OrderReason
    failures: int = 0


def newest(host: str, issued: Iterable[IssuedCert], directory: str) -> IssuedCert | None:
    """The certificate of `host` from `directory` that expires last (ties: by digest, for determinism)."""
    mine = [c for c in issued if c.host == host and c.directory == directory]
    return max(mine, key=lambda c: (c.not_after, c.sha256), default=None)


def serving(host: str, issued: Iterable[IssuedCert], now: datetime.datetime, directory: str) -> IssuedCert | None:
    """The certificate a proxy should serve for `host`: a usable one, from the configured directory
    if there is one (after `ACMEDirectory` changes, the old directory's serves until the new
    directory's arrives), the one that expires last."""
    usable = [c for c in issued if c.host == host and c.usable(now)]
    return max(usable, key=lambda c: (c.directory == directory, c.not_after, c.sha256), default=None)


def due(hosts_wanted: Iterable[str], issued: Iterable[IssuedCert], now: datetime.datetime,
        memory: AcmeMemory, directory: str) -> list[Order]:
    """The hosts to order a certificate for in this pass, sorted."""
    now = _utc(now)
    certs = tuple(issued)
    orders: list[Order] = []
    for host in sorted(set(hosts_wanted)):
        best = newest(host, certs, directory)
        if best is not None and best.fresh(now):
            continue
        failure = memory.failures.get(host)
        if failure is not None and now < failure.retry_at:
            continue
        reason: OrderReason = "renewal" if best is not None and not best.expired(now) else "missing"
        orders.append(Order(host, reason, 0 if failure is None else failure.count))
    return orders


def next_due(hosts_wanted: Iterable[str], issued: Iterable[IssuedCert], now: datetime.datetime,
             memory: AcmeMemory, directory: str) -> datetime.datetime | None:
    """When `due` will next have something to say that it has not now: the earliest renewal time or
    end of a backoff still ahead. None when nothing is pending. The loop wakes up for it."""
    now = _utc(now)
    certs = tuple(issued)
    times: list[datetime.datetime] = []
    for host in set(hosts_wanted):
        best = newest(host, certs, directory)
        failure = memory.failures.get(host)
        at = best.renew_at if best is not None and best.fresh(now) else now
        if failure is not None:
            at = max(at, failure.retry_at)
        if at > now:
            times.append(at)
    return min(times, default=None)


def obsolete(hosts_wanted: Iterable[str], issued: Iterable[IssuedCert], now: datetime.datetime) -> list[IssuedCert]:
    """Certificates whose secrets can be deleted, sorted: the host is no longer wanted, or the
    certificate has expired and a newer one of the same host exists (from any directory)."""
    now = _utc(now)
    wanted = set(hosts_wanted)
    certs = tuple(issued)
    last: dict[str, tuple[datetime.datetime, str]] = {}
    for c in certs:
        last[c.host] = max(last.get(c.host, (c.not_after, c.sha256)), (c.not_after, c.sha256))
    return sorted(c for c in certs
                  if c.host not in wanted or (c.expired(now) and (c.not_after, c.sha256) < last[c.host]))

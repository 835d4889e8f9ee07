"""ACME in the pass: which certificate each host serves, what to order, which secrets to write and
remove (pure: the time and the worker's outcomes are passed in).

* **Serving.** A host of a service labelled `swarmgate.acme=true` serves its newest usable issued
  certificate (`certificates.serving`); the route table names that secret as certificate and key.
* **Ordering.** `certificates.due` says which wanted hosts need an order now; the pass hands them to
  the ACME worker (off the reconcile thread, on the leader only) and never waits for it.
* **Storing.** A certificate the worker brought back stays in the pass memory (`Issued`) until a
  pass sees its secret: each pass that does not plans `CreateCertificateSecret`. The next pass's
  route table then names it, the courier brings it to the proxies and the config is pushed.
* **Removing.** An obsolete certificate's secret (`certificates.obsolete`) is removed only once no
  service mounts it (Swarm refuses to remove a secret in use; the courier keeps old ones a while).
* **Failures.** An outcome that failed is remembered (`AcmeMemory`, backoff per host); one host's
  failures never hold another host back.
* **Budget.** Orders are rationed (`acme_budget`): at most `ACMEOrdersPerHour` handed to the worker
  in any hour, renewals first; the hosts left wait, and the pass says until when.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field, replace

from swarmgate.models.routing.acme_hosts import AcmeRouting
from swarmgate.models.routing.labels import ServiceRouting, parse_service_labels
from swarmgate.models.routing.routes import RouteTable
from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning import certificates
from swarmgate.operator.planning.acme_budget import OrderLedger, ration
from swarmgate.operator.planning.acme_record import record_actions
from swarmgate.operator.planning.actions import (
    CreateCertificateSecret,
    CreateConfig,
    RemoveCertificateSecret,
    RemoveConfig,
)
from swarmgate.operator.planning.certificates import AcmeMemory, IssuedCert, Order


@dataclass(frozen=True)
class Issued:
    """A certificate the worker brought back, waiting for its secret: `data` holds the private key
    (never shown, never compared)."""

    cert: IssuedCert
    data: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class Outcome:
    """What the worker says about one order: the certificate, or why it failed (no key material)."""

    host: str
    issued: Issued | None = None
    error: str = ""


@dataclass(frozen=True)
class AcmeState:
    """What the pass carries about ACME: failures by host, certificates not yet stored, and the
    orders handed to the worker in the last hour (the budget's ledger)."""

    memory: AcmeMemory = field(default_factory=AcmeMemory)
    pending: tuple[Issued, ...] = ()
    ledger: OrderLedger = field(default_factory=OrderLedger)

    def placed(self, count: int, now: datetime.datetime) -> AcmeState:
        """The state once `count` orders were handed to the worker at `now`."""
        return replace(self, ledger=self.ledger.record(count, now))

    def learn(self, outcomes: Iterable[Outcome], now: datetime.datetime) -> AcmeState:
        memory, pending = self.memory, list(self.pending)
        for outcome in outcomes:
            if outcome.issued is not None:
                memory = memory.succeeded(outcome.host)
                pending.append(outcome.issued)
            else:
                memory = memory.failed(outcome.host, now, outcome.error or "unknown error")
        return AcmeState(memory, tuple(pending), self.ledger)


def issued_certs(observed: ObservedState) -> tuple[IssuedCert, ...]:
    return certificates.issued_from((s.name, s.labels) for s in observed.secrets)


def acme_routing(config: Config, observed: ObservedState, now: datetime.datetime | None,
                 refused_ids: Set[str] = frozenset()) -> AcmeRouting:
    """Per host, the secret to serve. Without a time (an offline command that was given none), the
    certificate that expires last. `refused_ids`: secrets a proxy could not load or the courier did
    not deliver; a host never serves one (it falls back to an older certificate, or to HTTP only),
    so one bad secret cannot stall every other host's config."""
    if config.acme_directory is None:
        return AcmeRouting(max_hosts=config.acme_max_hosts_per_service)
    refused = {s.name for s in observed.secrets if s.id in refused_ids}
    issued = tuple(c for c in issued_certs(observed) if c.secret_name not in refused)
    certs: dict[str, str] = {}
    for host in sorted({c.host for c in issued}):
        if now is not None:
            best = certificates.serving(host, issued, now, config.acme_directory)
        else:
            best = max((c for c in issued if c.host == host), key=lambda c: (c.not_after, c.sha256))
        if best is not None:
            certs[host] = best.secret_name
    return AcmeRouting(configured=True, certs=certs, max_hosts=config.acme_max_hosts_per_service)


def wanted_hosts(observed: ObservedState, tables: Iterable[RouteTable]) -> tuple[str, ...]:
    """The hosts of every routed (not set aside) service labelled `swarmgate.acme=true`."""
    hosts: set[str] = set()
    for table in tables:
        aside = {a.service for a in table.set_aside}
        for service in observed.services:
            parsed = parse_service_labels(service.name, service.labels)
            if (isinstance(parsed, ServiceRouting) and parsed.acme and parsed.service_cluster == table.cluster
                    and service.name not in aside):
                hosts.update(parsed.hosts)
    return tuple(sorted(hosts))


def _mounted_names(observed: ObservedState) -> frozenset[str]:
    names: set[str] = set()
    for service in observed.services:
        refs = ((service.spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Secrets") or []
        names.update(ref["SecretName"] for ref in refs if isinstance(ref, Mapping) and "SecretName" in ref)
    return frozenset(names)


@dataclass(frozen=True)
class AcmePlan:
    orders: tuple[Order, ...] = ()
    actions: tuple[CreateCertificateSecret | RemoveCertificateSecret | CreateConfig | RemoveConfig, ...] = ()
    state: AcmeState = field(default_factory=AcmeState)
    next_due: datetime.datetime | None = None
    wanted: tuple[str, ...] = ()  # the hosts that want a certificate
    issued: tuple[IssuedCert, ...] = ()  # every certificate the secrets describe
    deferred: tuple[str, ...] = ()  # hosts due, held back by the order budget


def plan_acme(config: Config, observed: ObservedState, tables: Iterable[RouteTable], state: AcmeState,
              now: datetime.datetime | None, serving: Iterable[str] = (), thumbprint: str | None = None) -> AcmePlan:
    """Orders to place and secrets to write or remove. `serving`: the secret names the desired route
    tables name (never removed); `thumbprint`: the account's, when this operator holds its key (then
    it is recorded in the Swarm, `acme_record`). Without a directory or a time, nothing is planned."""
    directory = config.acme_directory
    if directory is None or now is None:
        return AcmePlan(state=state)
    record = record_actions(observed, directory, thumbprint) if thumbprint is not None else []
    wanted = wanted_hosts(observed, tables)
    issued = issued_certs(observed)
    stored = {s.name for s in observed.secrets}
    pending = tuple(p for p in state.pending if p.cert.secret_name not in stored and p.cert.host in wanted)
    memory = state.memory.keep_only(wanted)
    # A certificate just brought back counts as issued: no second order while its secret is written.
    known = (*issued, *(p.cert for p in pending))
    rationed = ration(certificates.due(wanted, known, now, memory, directory), state.ledger, now,
                      per_hour=config.acme_orders_per_hour)
    creates = [CreateCertificateSecret(p.cert.secret_name, certificates.labels_for(p.cert), p.cert.host,
                                       certificates.format_time(p.cert.not_after), p.data) for p in pending]
    keep = _mounted_names(observed) | set(serving)
    by_name = {s.name: s for s in observed.secrets}
    removes = [RemoveCertificateSecret(by_name[c.secret_name].id, c.secret_name, c.host)
               for c in certificates.obsolete(wanted, issued, now) if c.secret_name not in keep]
    due_next = [t for t in (certificates.next_due(wanted, known, now, memory, directory), rationed.resume_at)
                if t is not None]
    return AcmePlan(rationed.orders, (*creates, *record, *removes),
                    AcmeState(memory, pending, state.ledger.recent(now)), min(due_next, default=None), wanted,
                    issued, rationed.deferred)

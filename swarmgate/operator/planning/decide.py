"""One pass's decision: desired state, actions, routes digest and the memory for the next pass (pure).

`decide_pass` joins the pipeline from a config and a snapshot: the TLS secrets the proxies' nginx
could not load are set aside, the desired state is computed, the extensions nginx -t rejects are
held, and the plan is made. The live pass (`control/reconcile.py`) and every command that says what
the operator would do (`plan`, `status`, `render`, `routes`) call it, so what they print is what a
live pass computes, by construction rather than by a second copy of the steps.

It reads no clock and calls no Docker. Whether nginx accepts a config is a `verdict` passed in (the
operator's is `renderers.validate.NginxGate().verdict`, which runs `nginx -t`); with none, nothing
is held for it.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from swarmgate.models.routing.backend_ca import unusable_ca_ids
from swarmgate.models.routing.tls_secrets import still_present, undelivered_secret_ids, unusable_secret_ids
from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.planning.acme_plan import AcmePlan, AcmeState, Outcome, acme_routing, plan_acme
from swarmgate.operator.planning.acme_record import recorded_thumbprint
from swarmgate.operator.planning.actions import Action, CreateCertificateSecret, NoOp, PublishProxyConfig
from swarmgate.operator.planning.desired import DesiredState, compute_desired
from swarmgate.operator.planning.holds import record_attempts, rejected_extensions
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.planning.undelivered import Undelivered, from_ids, learn_undelivered

Verdict = Callable[[str], str | None]  # nginx config text -> None if accepted, else nginx's message
Rejection = tuple[str, str]  # (extension, nginx -t message) of a proxy that refused a config


@dataclass(frozen=True)
class Reported:
    """What the proxies said: through the delivery channel's status (live), or asked by `plan`."""

    # Per extension, the digest every proxy task serves (a survey's answer; the live operator
    # remembers what it published instead, see `PassMemory.published`).
    published: Mapping[str, str] = field(default_factory=dict)
    rejections: tuple[Rejection, ...] = ()
    # Per extension, the digest every proxy task says it serves (live: from their statuses): the
    # certificate courier drops a secret only once every task serves the current config.
    served: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PassMemory:
    """What the operator carries from one pass to the next. A one-shot command starts empty."""

    # IDs of secrets a proxy's nginx could not load, kept while the secret exists.
    unusable_secrets: frozenset[str] = frozenset()
    # IDs of secrets whose courier file a proxy waited for in vain, kept while the secret exists;
    # with the times each is tried again (planning/undelivered.py).
    undelivered_secrets: frozenset[str] = frozenset()
    undelivered: Undelivered = field(default_factory=Undelivered)
    # Per extension, the spec digest this operator last wrote: what Swarm may roll back from.
    attempted: Mapping[str, str] = field(default_factory=dict)
    # Per extension, the digest this operator last published to the proxies.
    published: Mapping[str, str] = field(default_factory=dict)
    # ACME: failed orders by host (backoff), certificates brought back and not yet stored.
    acme: AcmeState = field(default_factory=AcmeState)

    def after_apply(self, done: Iterable[Action]) -> PassMemory:
        """The memory once `done` (what the edge applied, in order) has been written."""
        done = list(done)
        published = dict(self.published)
        published.update((a.extension, a.digest) for a in done if isinstance(a, PublishProxyConfig))
        attempted = dict(self.attempted)
        record_attempts(done, attempted)
        return replace(self, published=published, attempted=attempted)


@dataclass(frozen=True)
class PassDecision:
    desired: DesiredState
    actions: list[Action]
    # One digest of every extension's rendered config: a change means the routes moved.
    routes_digest: str
    memory: PassMemory
    # ACME orders for the worker (the leader places them), and when one is next due.
    acme: AcmePlan = field(default_factory=AcmePlan)


def learn_unusable_secrets(config: Config, observed: ObservedState, known: Iterable[str],
                           rejections: Iterable[Rejection]) -> frozenset[str]:
    """Secret IDs a proxy's nginx could not load, kept while the secret exists (a secret's content
    never changes under its ID, so the verdict stays true; a new secret gets a new ID)."""
    learnt = set(known)
    for extension, message in rejections:
        ext = config.extensions.get(extension)
        proxy = observed.service_named(ext.proxy_service_name) if ext is not None else None
        # A courier file names its ID itself; a plain mount is looked up in the proxy's spec.
        spec = proxy.spec if proxy is not None else {}
        learnt |= unusable_secret_ids(message, spec) | unusable_ca_ids(message, spec)
    return still_present(learnt, observed.secrets)


def learn_undelivered_secrets(observed: ObservedState, memory: PassMemory, rejections: Iterable[Rejection],
                              now: datetime.datetime | None) -> Undelivered:
    """Secret IDs whose courier file a proxy's agent waited for in vain (its rejection names them),
    each tried again a while later (planning/undelivered.py)."""
    known = memory.undelivered
    by_hand = memory.undelivered_secrets - known.ids - set(known.retried)
    if by_hand:
        known = replace(known, since={**known.since, **from_ids(by_hand, now).since})
    named = {i for _, message in rejections for i in undelivered_secret_ids(message)}
    return learn_undelivered(known, named, {s.id for s in observed.secrets}, now)


def routes_digest(desired: DesiredState) -> str:
    return hashlib.sha256("".join(e.rendered.digest for e in desired.extensions).encode()).hexdigest()


def decide_pass(
    config: Config,
    observed: ObservedState,
    *,
    reported: Reported = Reported(),
    memory: PassMemory = PassMemory(),
    verdict: Verdict | None = None,
    now: datetime.datetime | None = None,
    acme_thumbprint: str | None = None,
    outcomes: Iterable[Outcome] = (),
) -> PassDecision:
    """What a pass that observed `observed` decides; `memory` is the last pass's `PassDecision.memory`
    (after `after_apply`), or empty. ACME: `now` (UTC; none: nothing is ordered, and each host serves
    the certificate that expires last), the account's `acme_thumbprint` (none: the proxies answer no
    challenge), and the worker's `outcomes` since the last pass."""
    unusable = learn_unusable_secrets(config, observed, memory.unusable_secrets, reported.rejections)
    # Without the account's key (an offline command), the thumbprint the leader recorded in the Swarm.
    thumbprint = acme_thumbprint or recorded_thumbprint(observed, config.acme_directory)
    delivery = learn_undelivered_secrets(observed, memory, reported.rejections, now)
    undelivered = delivery.ids
    desired = compute_desired(config, observed, unusable_secrets=unusable, undelivered_secrets=undelivered,
                              served=reported.served, acme=acme_routing(config, observed, now, unusable | undelivered),
                              acme_thumbprint=thumbprint)
    rejected = rejected_extensions(desired, verdict) if verdict is not None else {}
    actions = plan(desired, observed, published={**memory.published, **reported.published}, rejected=rejected,
                   attempted=memory.attempted)
    state = memory.acme.learn(outcomes, now) if now is not None else memory.acme
    tables = [e.route_table for e in desired.extensions]
    acme = plan_acme(config, observed, tables, state, now, serving={n for t in tables for n in t.secrets},
                     thumbprint=acme_thumbprint)
    if acme.actions:
        # Certificates are stored first (the next pass serves them); obsolete ones go last.
        creates = [a for a in acme.actions if isinstance(a, CreateCertificateSecret)]
        removes = [a for a in acme.actions if not isinstance(a, CreateCertificateSecret)]
        actions = [*creates, *(a for a in actions if not (isinstance(a, NoOp) and a.hold is None)), *removes]
    return PassDecision(desired, actions, routes_digest(desired),
                        replace(memory, unusable_secrets=unusable, undelivered_secrets=undelivered,
                                undelivered=delivery, acme=acme.state),
                        acme)

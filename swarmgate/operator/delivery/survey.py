"""What every proxy task serves right now, read straight from the proxies (network I/O, no push).

`swarmgate status` and `swarmgate plan` run outside the operator: they compute the desired config
themselves (the same pipeline, the same deterministic digest), then ask each running proxy task's
control server what it serves, with the token digest the Swarm keeps on the token secret. So they
need no operator to answer, and say the same thing whichever operator (if any) is leading.
"""

from __future__ import annotations

from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.pusher import Pusher
from swarmgate.operator.delivery.token import digest_in_snapshot
from swarmgate.operator.delivery.wire import proxy_targets
from swarmgate.operator.planning.desired import DesiredState


def survey(config: Config, observed: ObservedState, desired: DesiredState, *, timeout: float = 10.0) -> ProxyState:
    """A store holding each hitless extension's desired config and what its proxy tasks say."""
    store = ProxyState()
    for ext in desired.extensions:
        if ext.hitless and ext.problem is None:
            store.publish(ext.name, ext.rendered.text, ext.rendered.digest)
    targets = proxy_targets(config, observed)
    store.retain_tasks({ext: [t.task for t in ts] for ext, ts in targets.items()})
    token = digest_in_snapshot(observed)
    pusher = Pusher(store, lambda: token)
    pusher.track(targets)
    pusher.survey(timeout=timeout)
    return store


def served_everywhere(store: ProxyState) -> dict[str, str]:
    """Per extension, its desired digest when every proxy task serves it (what `plan` calls published)."""
    out: dict[str, str] = {}
    for cluster in store.clusters():
        current = store.current(cluster)
        if current is not None and store.all_current(cluster):
            out[cluster] = current.digest
    return out

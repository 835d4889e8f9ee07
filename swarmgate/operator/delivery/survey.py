"""What every proxy task serves right now, read straight from the proxies (network I/O, no push).

`swarmgate status` and `swarmgate plan` run outside the operator: they compute the desired config
themselves (the same pipeline, the same deterministic digest), then ask each running proxy task's
control server what it serves. That takes the channel key (`--channel-key`; inside an operator's
container it is mounted): without it nothing can be read from a proxy, and only an operator's
`/v1/status` can tell. With it they need no operator to answer.
"""

from __future__ import annotations

from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.delivery.channel_holder import Keyring
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.pusher import Pusher
from swarmgate.operator.delivery.wire import proxy_targets
from swarmgate.operator.planning.desired import DesiredState


def survey(config: Config, observed: ObservedState, desired: DesiredState, key: Keyring | None, *,
           timeout: float = 10.0) -> ProxyState:
    """A store holding each hitless extension's desired config and what its proxy tasks say."""
    store = ProxyState()
    for ext in desired.extensions:
        if ext.hitless and ext.problem is None:
            store.publish(ext.name, ext.rendered.text, ext.rendered.digest)
    targets = proxy_targets(config, observed)
    store.retain_tasks({ext: [t.task for t in ts] for ext, ts in targets.items()})
    pusher = Pusher(store, lambda: key)
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

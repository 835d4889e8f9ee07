"""Weights and failure parameters of a pool's upstreams, from their services' labels (pure).

`swarmgate.weight` is a service's share of a pool it shares with others (1-100; 100 when unset), not
a per-task number: nginx's `weight=` is per `server`, so each task gets its service's weight divided
by the service's task count. With two services at 90 and 10, one task against three, the split is
90/10 whatever the task counts. A weight can only lower a service's own share: at most it has the
share an unlabelled service has, so joining another service's host with a weight takes no more of
that host's traffic than Interlock's plain pooling already gives.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from swarmgate.models.routing.labels import ServiceRouting
from swarmgate.models.routing.policy_values import MAX_WEIGHT
from swarmgate.models.routing.route_types import ServerParams, Upstream

# Each task's weight is its service's share scaled by this, then divided by the service's task count:
# three decimal digits of precision for pools of up to a thousand tasks per service.
SCALE = 1000


class _Member(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def routing(self) -> ServiceRouting: ...


def server_params(members: Sequence[_Member], upstreams: Sequence[Upstream]) -> tuple[ServerParams, ...]:
    """Per upstream, in order: weight, max_fails and fail_timeout; empty when no member sets any."""
    policy = {m.name: m.routing.policies.member for m in members}
    if all(p.weight is None and p.max_fails is None and p.fail_timeout is None for p in policy.values()):
        return ()
    weighted = any(p.weight is not None for p in policy.values())
    tasks = Counter(u.service for u in upstreams)
    out = []
    for u in upstreams:
        member = policy.get(u.service)
        share = (member.weight if member and member.weight is not None else MAX_WEIGHT)
        out.append(ServerParams(weight=max(1, round(share * SCALE / tasks[u.service])) if weighted else None,
                                max_fails=member.max_fails if member else None,
                                fail_timeout=member.fail_timeout if member else None))
    return tuple(out)

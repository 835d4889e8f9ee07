"""What the proxies said, as data: the `/v1/status` document and their rejections (pure).

Both read a `ProxyState`: the operator's own (filled by its pusher) or a survey's (`survey.py`), so
`swarmgate status` and the operator's `/v1/status` show one shape.
"""

from __future__ import annotations

from typing import Any

from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.planning.decide import Rejection


def status_document(store: ProxyState) -> dict[str, Any]:
    """The `/v1/status` JSON: what `swarmgate status` and dashboards read."""
    clusters: dict[str, Any] = {}
    for cluster in store.clusters():
        cfg = store.current(cluster)
        digest = cfg.digest if cfg else None
        clusters[cluster] = {
            "digest": digest,
            "published_at": cfg.published_at if cfg else None,
            "converged_at": cfg.converged_at if cfg else None,
            "all_current": store.all_current(cluster),
            "proxies": [
                {
                    "task": p.task, "node": p.node, "hostname": p.hostname,
                    "served_digest": p.served_digest or None, "current": p.served_digest == digest,
                    "serving_since": p.serving_since, "last_seen": p.last_seen,
                    "last_status": p.last_status, "last_error": p.last_error or None,
                    "rejected_digest": p.rejected_digest or None,
                    "waiting_digest": p.waiting_digest or None, "waiting_for": p.waiting_for or None,
                }
                for p in store.proxies(cluster)
            ],
        }
    return {"clusters": clusters}


def rejections(store: ProxyState) -> tuple[Rejection, ...]:
    """(extension, nginx -t message) of every proxy whose last push was rejected, as its status says
    (a task that serves a later push no longer blames what it rejected before)."""
    return tuple((p.cluster, p.last_error) for p in store.proxies()
                 if p.rejected_digest and p.last_error and p.last_status == "error")

"""What the proxies said, as data: the `/v1/status` document and their rejections (pure).

Both read a `ProxyState`: the operator's own (filled by its pusher) or a survey's (`survey.py`), so
`swarmgate status` and the operator's `/v1/status` show one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.traffic_ledger import RouteId, RouteTraffic
from swarmgate.operator.planning.decide import Rejection
from swarmgate.operator.planning.traffic_names import DEFAULT_ROUTE


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


def with_traffic(rows: list[dict[str, Any]], recent: Mapping[RouteId, RouteTraffic],
                 measured: set[str]) -> list[dict[str, Any]]:
    """The route rows, each with its `traffic` over the proxies' last interval: requests/s, 5xx ratio
    and p99 (None: no proxy of its extension measured an interval yet, or the route is passed through
    as TLS, which nginx's stream module serves without the traffic log). New dicts: `rows` is kept."""
    out = []
    for row in rows:
        route = ((row["extension"], *DEFAULT_ROUTE) if row["host"] == "*"
                 else (row["extension"], row["host"], row["path"] or "/"))
        seen = recent.get(route)
        traffic: dict[str, Any] | None = None
        if seen is not None:
            traffic = {"requests_per_second": round(seen.requests_per_second, 3),
                       "ratio_5xx": None if seen.ratio_5xx is None else round(seen.ratio_5xx, 4),
                       "p99_seconds": None if seen.p99_seconds is None else round(seen.p99_seconds, 4)}
        elif row["extension"] in measured and (row.get("tls") or {}).get("source") != "passthrough":
            traffic = {"requests_per_second": 0.0, "ratio_5xx": None, "p99_seconds": None}
        out.append({**row, "traffic": traffic})
    return out

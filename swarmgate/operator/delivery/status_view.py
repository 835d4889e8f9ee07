"""What the status page shows, taken from a `/v1/status` document (pure).

The page shows nothing the document does not hold: every value here is read from it, filtered
(host, service), cut into pages, or put in plain words. Things said in words are derived, never
new facts: the label to fix for a reason kind, "answers 503" for a host no route serves, the
Grafana link built from the configured dashboard URL and the route's extension and host.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from swarmgate.models.routing.labels import KNOWN_LABELS, OWN_LABELS, OWN_PREFIX, PREFIX

PAGE_SIZE = 100  # routes per page; set-aside services and notices beyond it are counted, not listed
MAX_FILTER = 253  # a host name's longest; a longer filter matches nothing anyway
# Reason kinds that are not one label: what a person changes to route the service again.
_FIX: dict[str, str] = {
    "vip_backend": f"{PREFIX}backend_mode, or attach the service to an overlay network",
    "no_host_port": f"publish {PREFIX}port's target port in host mode (--publish mode=host,target=PORT)",
    "no_extension": f"{PREFIX}service_cluster (no extension serves this cluster)",
    "missing_secret": f"{PREFIX}ssl_cert / {PREFIX}ssl_key (create the secret they name)",
    "forbidden_secret": f"{PREFIX}ssl_cert / {PREFIX}ssl_key (name a secret of your own)",
    "unusable_secret": f"{PREFIX}ssl_cert / {PREFIX}ssl_key (the secret is not a PEM certificate or key nginx loads)",
    "undelivered_secret": f"{PREFIX}ssl_cert / {PREFIX}ssl_key (the secret did not reach a proxy)",
    "too_many_routes": f"{PREFIX}hosts / {PREFIX}context_root (fewer hosts times paths)",
    "ssl_only_without_tls": f"{PREFIX}ssl_only (or give the hosts a certificate)",
}


@dataclass(frozen=True)
class PageQuery:
    """The page's query parameters: case-insensitive substring filters and a 1-based page number."""

    host: str = ""
    service: str = ""
    page: int = 1

    def href(self, **changes: Any) -> str:
        """A relative link to this page with some parameters changed (empty ones left out)."""
        values = {"host": self.host, "service": self.service, "page": self.page, **changes}
        params = {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}
        return "?" + urlencode(params) if params else "?"


def parse_query(params: Mapping[str, str]) -> PageQuery:
    """Lenient: a filter is trimmed and bounded, a page that is not a positive number is page 1."""
    page = params.get("page", "1").strip()
    return PageQuery(host=params.get("host", "").strip().lower()[:MAX_FILTER],
                     service=params.get("service", "").strip()[:MAX_FILTER],
                     page=int(page) if page.isdigit() and 0 < int(page) < 10**6 else 1)


def when(stamp: float | str | None) -> str:
    """A Unix time or an ISO time as `YYYY-MM-DD HH:MM:SS UTC`; `-` for none."""
    if stamp is None or stamp == "":
        return "-"
    if isinstance(stamp, str):
        return stamp.replace("T", " ").replace("+00:00", "").rstrip("Z") + " UTC"
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def label_to_fix(kind: str) -> str:
    if kind in KNOWN_LABELS:
        return PREFIX + kind
    if kind in OWN_LABELS:
        return OWN_PREFIX + kind
    return _FIX.get(kind, "-")


def dashboard_link(url: str | None, extension: str, host: str) -> str | None:
    if not url:
        return None
    return url + ("&" if "?" in url else "?") + urlencode({"var-extension": extension, "var-host": host})


def _matches(query: PageQuery, hosts: list[str], services: list[str]) -> bool:
    return ((not query.host or any(query.host in h.lower() for h in hosts))
            and (not query.service or any(query.service.lower() in s.lower() for s in services)))


def _served(host: str, routed: set[str]) -> bool:
    """Whether a route's host name matches `host` the way nginx picks a server (exact, or `*.` wildcard)."""
    return host in routed or any(r.startswith("*.") and host.endswith(r[1:]) for r in routed)


def build_view(document: Mapping[str, Any], query: PageQuery, *, dashboard_url: str | None = None) -> dict[str, Any]:
    """The template's whole input: the document's sections, filtered and paginated."""
    acme_hosts: Mapping[str, Any] = (document.get("acme") or {}).get("hosts") or {}
    all_routes: list[dict[str, Any]] = document.get("routes") or []
    routed = {r["host"] for r in all_routes}
    matched = [r for r in all_routes if _matches(query, [r["host"]], r["services"])]
    pages = max(1, -(-len(matched) // PAGE_SIZE))
    page = min(query.page, pages)
    routes = [_route(r, acme_hosts.get(r["host"]), dashboard_url)
              for r in matched[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]]
    aside = [a for a in document.get("set_aside") or [] if _matches(query, a.get("hosts") or [], [a["service"]])]
    terms = [t for t in (query.host, query.service.lower()) if t]
    notices = [(name, n) for name, items in sorted((document.get("notices") or {}).items()) if name
               for n in items if not terms or any(t in n.lower() for t in terms)]
    operator = document.get("operator") or {}
    return {
        "query": query, "page": page, "pages": pages, "matched": len(matched), "total": len(all_routes),
        "prev_href": query.href(page=page - 1) if page > 1 else None,
        "next_href": query.href(page=page + 1) if page < pages else None,
        "routes": routes,
        "unrouted_host": query.host if "." in query.host and not _served(query.host, routed) else None,
        "default_backend": "*" in routed,
        "set_aside": [{**a, "fix": label_to_fix(a.get("kind", "other")),
                       "dark_hosts": [h for h in a.get("hosts") or [] if h not in routed]}
                      for a in aside[:PAGE_SIZE]],
        "set_aside_more": max(0, len(aside) - PAGE_SIZE), "set_aside_total": len(document.get("set_aside") or []),
        "notices": notices[:PAGE_SIZE], "notices_more": max(0, len(notices) - PAGE_SIZE),
        "config_notices": (document.get("notices") or {}).get("", []),
        "extensions": [_extension(name, ext) for name, ext in sorted((document.get("clusters") or {}).items())],
        "operator": operator, "leader": document.get("leader") or {},
        "standby": operator.get("role") == "standby",
        "docker_unreachable": operator.get("docker_reachable") is False,
        "has_operator": bool(operator), "dashboard_url": dashboard_url,
        "many_extensions": len({r["extension"] for r in all_routes} | set(document.get("clusters") or {})) > 1,
    }


def _route(row: Mapping[str, Any], acme: Mapping[str, Any] | None, dashboard_url: str | None) -> dict[str, Any]:
    tls = row.get("tls") or {}
    if acme is not None:
        source = "ACME" + (f": {acme['certificate']}" if acme.get("certificate") else ", no certificate yet")
        expiry = acme.get("not_after") or "-"
    elif tls.get("source") == "secret":
        source, expiry = f"secret {tls['secret']}", "not read (the operator never reads a secret's data)"
    elif tls.get("source") == "passthrough":
        source, expiry = "passed through to the service", "the service's own"
    else:
        source, expiry = "-", "-"
    return {**row, "tls_source": source, "tls_expiry": expiry, **traffic_cells(row.get("traffic")),
            "link": dashboard_link(dashboard_url, row["extension"], row["host"])}


def traffic_cells(traffic: Mapping[str, Any] | None) -> dict[str, Any]:
    """A route's requests/s, 5xx ratio and p99 in words; `-` where the document holds none (a standby,
    a route passed through as TLS, no two counter files read yet; no requests: no ratio and no p99)."""
    if not traffic:
        return {"rate": "-", "errors": "-", "p99": "-", "failing": False}
    rate, ratio, p99 = traffic.get("requests_per_second"), traffic.get("ratio_5xx"), traffic.get("p99_seconds")
    return {
        "rate": "-" if rate is None else "0" if rate == 0 else f"{rate:.2f}" if rate < 10 else f"{rate:.0f}",
        "errors": "-" if ratio is None else f"{ratio * 100:.1f} %",
        "p99": "-" if p99 is None else f"{p99 * 1000:.0f} ms" if p99 < 1 else f"{p99:.2f} s",
        "failing": bool(ratio),
    }


def _extension(name: str, ext: Mapping[str, Any]) -> dict[str, Any]:
    proxies = [{**p, "since": when(p.get("serving_since")), "seen": when(p.get("last_seen"))}
               for p in ext.get("proxies") or []]
    return {"name": name, "digest": ext.get("digest"), "all_current": ext.get("all_current"),
            "published": when(ext.get("published_at")), "converged": when(ext.get("converged_at")),
            "proxies": proxies}

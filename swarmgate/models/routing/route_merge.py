"""Pooling and conflict resolution: routed services → hosts, locations and pools (pure).

Services that ask for the same host and path share one pool (Interlock's canary pattern). Where they
disagree on a setting, the **oldest** service decides (Swarm `CreatedAt`, then name), whether its
value is set or not, so a newly created service can never change what an existing one configured:

* per pool (host + path): sticky_session_cookie, ip_hash, context_root_rewrite, ssl_backend (and its
  verification), the whole policy (`swarmgate.*` policy labels), a canary's match;
* per host: TLS cert/key, whether the whole host is a redirect (and its code), ssl_only, HSTS;
* per extension: which service is the default backend.

Every overruled value is reported as a notice naming both services.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from swarmgate.models.quick_init import quick_init
from swarmgate.models.routing.https_values import HSTS, BackendTLS
from swarmgate.models.routing.keepalive import shortest_idle
from swarmgate.models.routing.labels import ServiceRouting
from swarmgate.models.routing.policy_labels import NO_POLICIES, RoutePolicy
from swarmgate.models.routing.pool_weights import server_params
from swarmgate.models.routing.route_types import HostRoute, PathRoute, TLSFiles, Upstream
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.services import Service

T = TypeVar("T")


@quick_init
@dataclass(frozen=True)
class Routed:
    """A service that is routed: its labels, typed, and its upstreams."""

    service: Service
    routing: ServiceRouting
    upstreams: tuple[Upstream, ...]

    @property
    def name(self) -> str:
        return self.service.name


POOL_DIGEST_CHARS = 16


def pool_name(host: str, path: str) -> str:
    """A stable nginx upstream name for one host and path: readable, and unique by its hash.

    Two pools with one name make nginx reject the whole config ("duplicate upstream"), and labels
    choose host and path: with 32 bits of digest a service could be made to collide with another's
    pool by trying names for a few minutes; 64 bits put that out of reach.

    The digest comes first: nginx compares a new upstream's name with every one before it
    (`ngx_http_upstream_add`, and again per request for `proxy_pass http://$variable`), and names
    that differ in their first byte end each comparison at once; with the host first, 10,000 pools
    took nginx -t twice as long.
    """
    readable = _NOT_READABLE.sub("_", f"{host}{path}".lower()).strip("_")[:48]
    digest = hashlib.sha256(f"{host}\n{path}".encode()).hexdigest()[:POOL_DIGEST_CHARS]
    return f"{digest}_{readable}"


_NOT_READABLE = re.compile(r"[^a-z0-9]+")


def age_key(service: Service) -> tuple[str, str]:
    """Sorts services oldest first; an unknown creation time sorts last (youngest)."""
    return (_sortable_stamp(service.created_at) or "~", service.name)


@functools.lru_cache(maxsize=4096)
def _sortable_stamp(created_at: str) -> str:
    # Go prints fractions without trailing zeros, so pad them. Cached: services created together
    # share their stamp's second, and a pass asks for every pooled service's age.
    match = _STAMP.match(created_at)
    return f"{match.group(1)}.{(match.group(2) or '').ljust(9, '0')}Z" if match else created_at


_STAMP = re.compile(r"^(.*?)(?:\.(\d+))?Z$")


def _said(value: object) -> str:
    if value is None or value is False:
        return "not set"
    if isinstance(value, TLSFiles):
        return f"{value.cert}/{value.key}"
    if isinstance(value, BackendTLS):
        return f"TLS verified with {value.ca}" if value.ca else "TLS, not verified"
    if isinstance(value, HSTS):
        return value.header
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0]) if value[1] == 302 else f"{value[0]} ({value[1]})"
    if isinstance(value, RoutePolicy):
        return "its own policy labels"
    return str(value)


def oldest_decides(kind: str, where: str, claims: Sequence[tuple[Routed, T]], notices: list[str]) -> T | None:
    """The oldest claimant's value; every different value is reported as overruled."""
    if not claims:
        return None
    if len(claims) == 1:  # nothing to overrule (most pools have one service)
        return claims[0][1]
    ordered = sorted(claims, key=lambda c: age_key(c[0].service))
    first, value = ordered[0]
    for other, other_value in ordered[1:]:
        if other_value != value:
            notices.append(f"{where}: {kind} of service {other.name} ({_said(other_value)}) "
                           f"overruled by older service {first.name} ({_said(value)})")
    return value


def _under(path: str, root: str) -> bool:
    return root != "/" and (path == root or path.startswith(root + "/"))


def path_route(host: str, path: str, members: Sequence[tuple[Routed, bool]], ext: Extension,
               notices: list[str]) -> PathRoute:
    """One pool: `members` are the services asking for this host and path (and whether as websocket).

    Services labelled `swarmgate.canary` form a second pool that takes only the requests their match
    selects; the oldest canary's match decides. Without any other service there, a canary is the pool."""
    if len(members) == 1 and members[0][0].routing.policies.member.canary is None:
        # One service and no canary, as in most pools: its own values, with nothing to overrule.
        only = members[0][0]
        return _pool(path, members, members, pool_name(host, path), ext, sticky=only.routing.sticky_session_cookie,
                     ip_hash=only.routing.ip_hash, strip=_strip(only.routing, path),
                     backend_tls=_backend_tls(only.routing), policy=_policy(only.routing))
    where = f"host {host} path {path}"
    sticky = oldest_decides("sticky_session_cookie", where,
                            [(m, m.routing.sticky_session_cookie) for m, _ in members], notices)
    ip_hash = oldest_decides("ip_hash", where, [(m, m.routing.ip_hash) for m, _ in members], notices)
    strip = oldest_decides("context_root_rewrite", where, [(m, _strip(m.routing, path)) for m, _ in members], notices)
    backend_tls = oldest_decides("ssl_backend", where, [(m, _backend_tls(m.routing)) for m, _ in members], notices)
    policy = oldest_decides("policy", where, [(m, _policy(m.routing)) for m, _ in members], notices)
    canaries = [(m, ws) for m, ws in members if m.routing.policies.member.canary is not None]
    stable = [(m, ws) for m, ws in members if m.routing.policies.member.canary is None]
    match = oldest_decides("canary", where, [(m, m.routing.policies.member.canary) for m, _ in canaries], notices)
    if canaries and not stable:
        notices.append(f"{where}: only canaries ({', '.join(sorted({m.name for m, _ in canaries}))}) route it: "
                       "they take every request")
        stable, canaries, match = canaries, [], None
    elif canaries and strip is not None:
        # A canary's pool is chosen by a variable, and nginx then cannot replace the URI's prefix.
        notices.append(f"{where}: the canary of {', '.join(sorted({m.name for m, _ in canaries}))} is not "
                       "served: the location strips its context root (context_root_rewrite)")
        canaries, match = [], None
    canaries = [(m, ws) for m, ws in canaries if m.routing.policies.member.canary == match]
    route = _pool(path, stable, members, pool_name(host, path), ext, sticky=sticky, ip_hash=ip_hash, strip=strip,
                  backend_tls=backend_tls, policy=policy)
    if canaries and match is not None:
        canary = _pool(path, canaries, members, pool_name(host, path + "#canary"), ext, sticky=sticky,
                       ip_hash=ip_hash, strip=strip, backend_tls=backend_tls, policy=policy)
        route = replace(route, canary=canary, canary_match=match)
    return route


def _pool(path: str, part: Sequence[tuple[Routed, bool]], members: Sequence[tuple[Routed, bool]], name: str,
          ext: Extension, *, sticky: str | None, ip_hash: bool | None, strip: str | None,
          backend_tls: BackendTLS | None, policy: RoutePolicy | None) -> PathRoute:
    """The pool of `part` (the stable services, or the canaries) of a location all `members` share."""
    # One service's upstreams are distinct and in this order already (routes.py keys them by address and
    # port, and sorts them so): neither a set to hash nor a sort.
    upstreams = part[0][0].upstreams if len(part) == 1 else tuple(sorted(
        {u for m, _ in part for u in m.upstreams}, key=lambda u: (u.address, u.port, u.task_id)))
    return PathRoute(
        path=path, pool=name, services=tuple(sorted({m.name for m, _ in part})), upstreams=upstreams,
        strip_prefix=strip, websocket=any(ws for _, ws in members), sticky_cookie=sticky,
        ip_hash=bool(ip_hash) or (ext.config.ip_hash and sticky is None), backend_tls=backend_tls,
        policy=policy, params=server_params([m for m, _ in part], upstreams),
        backend_idle_timeout=shortest_idle(m.routing.backend_idle_timeout for m, _ in part))


def _strip(r: ServiceRouting, path: str) -> str | None:
    """The prefix a location strips: a context root strips it for its own location and for websocket
    endpoints below it."""
    return r.context_root if r.context_root_rewrite and _under(path, r.context_root) else None


def _policy(r: ServiceRouting) -> RoutePolicy | None:
    route = r.policies.route
    # Most services set no policy label and share NO_POLICIES: known empty without comparing each field.
    return None if route is NO_POLICIES.route or route == _NO_ROUTE_POLICY else route


_NO_ROUTE_POLICY = RoutePolicy()


def _backend_tls(r: ServiceRouting) -> BackendTLS | None:
    if not r.ssl_backend:
        return None
    return BackendTLS(ca=r.ssl_backend_ca if r.ssl_backend_tls_verify == "required" else None)


def _hsts(r: ServiceRouting) -> HSTS | None:
    return None if r.hsts is None else HSTS(r.hsts, subdomains=r.hsts_subdomains, preload=r.hsts_preload)


def _tls_files(m: Routed, host: str, acme_certs: Mapping[str, str]) -> TLSFiles | None:
    """A host's certificate and key: the labels' secrets, or the ACME certificate's one secret that
    holds both (none yet: the host is served over HTTP only until it is issued)."""
    if m.routing.acme:
        secret = acme_certs.get(host)
        return TLSFiles(secret, secret) if secret else None
    return TLSFiles(m.routing.ssl_cert, m.routing.ssl_key) if m.routing.ssl_cert else None


def merge_hosts(routed: Sequence[Routed], ext: Extension, notices: list[str],
                acme_certs: Mapping[str, str] | None = None) -> tuple[HostRoute, ...]:
    """Every host of the routed services, its pools, TLS files and redirect, sorted by host name;
    `acme_certs`: per host, the secret of its issued certificate (services labelled `swarmgate.acme`)."""
    acme_certs = acme_certs or {}
    by_path: dict[tuple[str, str], list[tuple[Routed, bool]]] = defaultdict(list)
    claimants: dict[str, dict[str, Routed]] = defaultdict(dict)
    redirects: dict[tuple[str, str], str] = {}
    for item in routed:
        for host in item.routing.hosts:
            claimants[host][item.name] = item
            by_path[(host, item.routing.context_root)].append((item, False))
            for endpoint in item.routing.websocket_endpoints:
                by_path[(host, endpoint)].append((item, True))
        for source, target in item.routing.redirects:
            claimants[source][item.name] = item
            redirects[(source, item.name)] = target

    paths_of: dict[str, list[str]] = defaultdict(list)
    for h, path in sorted(by_path):
        paths_of[h].append(path)
    hosts: list[HostRoute] = []
    for host in sorted(claimants):
        claimed = claimants[host]
        if len(claimed) == 1:
            (only,) = claimed.values()
            if (host, only.name) not in redirects:
                hosts.append(_sole_host(host, only, [(path, by_path[(host, path)]) for path in paths_of[host]], ext,
                                        notices, acme_certs))
                continue
        members = sorted(claimed.values(), key=lambda m: m.name)
        where = f"host {host}"
        redirect_with_code = oldest_decides("redirect", where, [
            (m, (redirects[(host, m.name)], m.routing.policies.redirect_code) if (host, m.name) in redirects else None)
            for m in members], notices)
        redirect, code = redirect_with_code or (None, 302)
        routes_here = [m for m in members if host in m.routing.hosts]
        tls = oldest_decides("ssl_cert/ssl_key", where, [(m, _tls_files(m, host, acme_certs)) for m in routes_here],
                             notices)
        ssl_only = oldest_decides("ssl_only", where, [(m, m.routing.ssl_only) for m in routes_here], notices)
        if ssl_only and tls is None and any(m.routing.acme for m in routes_here):
            notices.append(f"{where}: ssl_only waits for the host's first ACME certificate; served over HTTP "
                           "until it is issued")
        hsts = oldest_decides("hsts", where, [(m, _hsts(m.routing)) for m in routes_here], notices)
        paths = tuple(path_route(host, path, by_path[(host, path)], ext, notices) for path in paths_of[host])
        if redirect is not None and paths:
            served = ", ".join(sorted({s for p in paths for s in p.services}))
            notices.append(f"{where}: redirected to {redirect}; its routes ({served}) are not served")
            paths = ()
        # A redirect to HTTPS where the host has no TLS would lead nowhere (labels.py refuses it per service).
        hosts.append(HostRoute(host=host, paths=paths, tls=tls, redirect=redirect, redirect_code=code,
                               ssl_only=bool(ssl_only) and tls is not None, hsts=hsts))
    return tuple(hosts)


def _sole_host(host: str, m: Routed, pools: list[tuple[str, list[tuple[Routed, bool]]]], ext: Extension,
               notices: list[str], acme_certs: Mapping[str, str]) -> HostRoute:
    """`merge_hosts` for a host only one service routes, and not as a redirect source (most hosts):
    its own values, with nothing to overrule. `pools`: each of the host's paths and its members."""
    tls = _tls_files(m, host, acme_certs)
    if m.routing.ssl_only and tls is None and m.routing.acme:
        notices.append(f"host {host}: ssl_only waits for the host's first ACME certificate; served over HTTP "
                       "until it is issued")
    paths = tuple(path_route(host, path, members, ext, notices) for path, members in pools)
    return HostRoute(host=host, paths=paths, tls=tls, ssl_only=m.routing.ssl_only and tls is not None,
                     hsts=_hsts(m.routing))


def default_backend(routed: Sequence[Routed], ext: Extension, notices: list[str]) -> PathRoute | None:
    """The pool of the oldest service labelled default_backend=true, which serves unknown hosts."""
    candidates = [m for m in routed if m.routing.default_backend]
    chosen = oldest_decides("default_backend", "default backend", [(m, m.name) for m in candidates], notices)
    winner = next((m for m in candidates if m.name == chosen), None)
    return None if winner is None else path_route("_default", "/", [(winner, False)], ext, notices)

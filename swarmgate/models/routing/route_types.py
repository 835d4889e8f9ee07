"""The route table's value types (pure, frozen, hashable)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from swarmgate.models.quick_init import quick_init
from swarmgate.models.routing.https_values import HSTS, BackendTLS
from swarmgate.models.routing.keepalive import pool_idle_timeout
from swarmgate.models.routing.labels import SetAside
from swarmgate.models.routing.nginx_sizes import upstream_zone_kb
from swarmgate.models.routing.policy_labels import ErrorPage, RoutePolicy
from swarmgate.models.routing.policy_values import Canary


@quick_init
@dataclass(frozen=True)
class Upstream:
    """One running task, reached at its node's address and the host port Swarm published for it, or
    at its own address on an overlay network; or a service's virtual IP (`task_id` is then `vip`)."""

    address: str
    port: int
    task_id: str
    node_id: str
    service: str
    overlay: bool = False  # a task at its own address on an overlay network (task mode)


@dataclass(frozen=True)
class TLSFiles:
    """Swarm secret names of a host's certificate and key (mounted at /run/secrets/NAME)."""

    cert: str | None
    key: str | None


@dataclass(frozen=True)
class ServerParams:
    """nginx's per-`server` parameters of one upstream, from its service's labels: its share of the
    pool's requests (`weight`) and when it is skipped as failing (`max_fails`, `fail_timeout` s)."""

    weight: int | None = None
    max_fails: int | None = None
    fail_timeout: int | None = None


@quick_init
@dataclass(frozen=True)
class PathRoute:
    """One location of a host and the pool of upstreams behind it."""

    path: str
    pool: str
    services: tuple[str, ...]
    upstreams: tuple[Upstream, ...]
    strip_prefix: str | None = None
    websocket: bool = False
    sticky_cookie: str | None = None
    ip_hash: bool = False
    backend_tls: BackendTLS | None = None  # the proxy speaks TLS to these tasks (`ssl_backend`)
    policy: RoutePolicy | None = None  # what the location enforces (`swarmgate.*` policy labels)
    params: tuple[ServerParams, ...] = ()  # per upstream, in order; empty when no service sets any
    canary: PathRoute | None = None  # the pool that takes the requests `canary_match` selects
    canary_match: Canary | None = None

    @property
    def fails_over_fast(self) -> bool:
        """Two or more tasks, whatever the mode: a connect that has not completed in a short time goes
        to another task (the renderer's `FAILOVER_CONNECT_MS`). A task on a node that just lost power
        (host mode: ARP gives up after about 3 s) or that one LB node's overlay does not know yet
        leaves SYNs unanswered, and TCP's retries (1 s, then 3 s) would hold the request past a
        client's patience while another task could answer it."""
        return len(self.upstreams) >= 2

    @property
    def error_pages(self) -> tuple[ErrorPage, ...]:
        """The error pages the location names (each a named location of its server)."""
        return self.policy.error_pages if self.policy else ()

    @property
    def own_location(self) -> bool:
        """Whether the location needs more than a pool: a policy or a canary to choose by."""
        return self.policy is not None or self.canary is not None
    backend_idle_timeout: float | None = None  # the shortest its services declare (`keepalive.py`)

    def keepalive_timeout(self, default: float) -> float | None:
        """nginx's idle timeout for this pool's connections (`default`: UpstreamKeepaliveTimeout); None
        when the pool keeps none (its tasks declared `swarmgate.backend_idle_timeout=0`)."""
        return pool_idle_timeout(default, self.backend_idle_timeout)

    @property
    def zone_kb(self) -> int:
        """The smallest shared-memory zone (KiB) that holds this pool's servers (see `nginx_sizes`)."""
        return upstream_zone_kb(len(self.upstreams))


@quick_init
@dataclass(frozen=True)
class HostRoute:
    """One server: a host name, its locations, its TLS files, or a redirect of the whole host.

    `ssl_only`: plain HTTP requests get a 301 to HTTPS (but ACME's HTTP-01 challenges); `hsts`: the
    header its HTTPS responses carry."""

    host: str
    paths: tuple[PathRoute, ...]
    tls: TLSFiles | None = None
    redirect: str | None = None
    ssl_only: bool = False
    hsts: HSTS | None = None
    redirect_code: int = 302  # of `redirect` (`swarmgate.redirect_code`; Interlock's 302 by default)

    @property
    def error_pages(self) -> tuple[ErrorPage, ...]:
        """The distinct error pages the host's locations name (each a named location of its server)."""
        pages = {(page.code, page.digest): page for p in self.paths if p.policy for page in p.policy.error_pages}
        return tuple(pages[key] for key in sorted(pages))


@dataclass(frozen=True)
class PassthroughRoute:
    """A host whose TLS connections go to its services untouched (`ssl_passthrough`), chosen by SNI."""

    host: str
    pool: str
    services: tuple[str, ...]
    upstreams: tuple[Upstream, ...]


@dataclass(frozen=True)
class RouteTable:
    """Everything one extension's proxy routes, and every service set aside, with reasons."""

    cluster: str
    hosts: tuple[HostRoute, ...] = ()
    default_backend: PathRoute | None = None
    set_aside: tuple[SetAside, ...] = ()
    notices: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()  # IDs of the overlay networks the proxy must be on for these routes
    passthrough: tuple[PassthroughRoute, ...] = ()  # served on the TLS port before any termination

    # The table is frozen, and a pass asks for these again and again (the renderer, the proxy's spec,
    # the courier): each is worked out once (10,000 pools made them a tenth of a render).
    @functools.cached_property
    def secrets(self) -> tuple[str, ...]:
        """The Swarm secrets the proxy must mount: this table's TLS hosts' and the CA bundles that
        verify its TLS backends."""
        names = {n for h in self.hosts if h.tls for n in (h.tls.cert, h.tls.key) if n}
        names |= {p.backend_tls.ca for p in self.pools if p.backend_tls and p.backend_tls.ca}
        return tuple(sorted(names | set(self.readable_secrets)))

    @functools.cached_property
    def readable_secrets(self) -> tuple[str, ...]:
        """The secrets nginx's workers read at each request (htpasswd files of basic auth): delivered
        readable to them, where certificates and keys stay root's (nginx's master reads those)."""
        return tuple(sorted({p.policy.auth_secret for p in self.pools if p.policy and p.policy.auth_secret}))

    @functools.cached_property
    def readable_only_secrets(self) -> tuple[str, ...]:
        """The readable secrets that are no certificate, key or CA bundle of this table too: one named
        both ways stays root's (the htpasswd use then fails closed), so a service naming another's key
        as its htpasswd file never makes that key readable."""
        private = {n for h in self.hosts if h.tls for n in (h.tls.cert, h.tls.key) if n}
        private |= {p.backend_tls.ca for p in self.pools if p.backend_tls and p.backend_tls.ca}
        return tuple(n for n in self.readable_secrets if n not in private)

    @functools.cached_property
    def pools(self) -> tuple[PathRoute, ...]:
        routes = [p for h in self.hosts for p in h.paths]
        if self.default_backend is not None:
            routes.append(self.default_backend)
        return tuple(routes) + tuple(p.canary for p in routes if p.canary is not None)

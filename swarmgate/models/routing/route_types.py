"""The route table's value types (pure, frozen, hashable)."""

from __future__ import annotations

from dataclasses import dataclass

from swarmgate.models.routing.https_values import HSTS, BackendTLS
from swarmgate.models.routing.keepalive import pool_idle_timeout
from swarmgate.models.routing.labels import SetAside
from swarmgate.models.routing.nginx_sizes import upstream_zone_kb


@dataclass(frozen=True)
class Upstream:
    """One running task, reached at its node's address and the host port Swarm published for it, or
    at its own address on an overlay network; or a service's virtual IP (`task_id` is then `vip`)."""

    address: str
    port: int
    task_id: str
    node_id: str
    service: str


@dataclass(frozen=True)
class TLSFiles:
    """Swarm secret names of a host's certificate and key (mounted at /run/secrets/NAME)."""

    cert: str | None
    key: str | None


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
    backend_idle_timeout: float | None = None  # the shortest its services declare (`keepalive.py`)

    def keepalive_timeout(self, default: float) -> float | None:
        """nginx's idle timeout for this pool's connections (`default`: UpstreamKeepaliveTimeout); None
        when the pool keeps none (its tasks declared `swarmgate.backend_idle_timeout=0`)."""
        return pool_idle_timeout(default, self.backend_idle_timeout)

    @property
    def zone_kb(self) -> int:
        """The smallest shared-memory zone (KiB) that holds this pool's servers (see `nginx_sizes`)."""
        return upstream_zone_kb(len(self.upstreams))


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

    @property
    def secrets(self) -> tuple[str, ...]:
        """The Swarm secrets the proxy must mount: this table's TLS hosts' and the CA bundles that
        verify its TLS backends."""
        names = {n for h in self.hosts if h.tls for n in (h.tls.cert, h.tls.key) if n}
        names |= {p.backend_tls.ca for p in self.pools if p.backend_tls and p.backend_tls.ca}
        return tuple(sorted(names))

    @property
    def pools(self) -> tuple[PathRoute, ...]:
        routes = [p for h in self.hosts for p in h.paths]
        if self.default_backend is not None:
            routes.append(self.default_backend)
        return tuple(routes)

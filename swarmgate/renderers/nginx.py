"""Route table → nginx configuration text, with jinja2 (pure).

The default template is `templates/nginx.conf.j2`. Interlock's `Template` option names a Swarm
config whose data is used as the template instead (`custom_template` looks it up in the snapshot);
it is rendered with the same context and the same safety filters, in jinja2's sandbox. Interlock's
own templates were Go templates, so they have to be rewritten for jinja2; the default template is
the reference for the context (`ext`, `o` = the extension's nginx options, `table`, `server_info`,
`swarmgate_control`).

Every config a hitless proxy runs carries swarmgate's control server (`templates/control.conf.j2`):
the operator pushes the next config through it. A custom template must therefore emit
`{{ swarmgate_control }}` inside its `http` block; in hitless mode a template whose output lacks it
is a `ConfigError`, which sets that extension aside with the reason (its proxies keep serving).

Label-derived values were validated into typed values by `models.labels`; the `word` filter checks
them again at the point of use, so a table built by other means cannot smuggle nginx syntax in.
Output is deterministic, and its sha256 names it (`RenderedConfig.digest`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from swarmgate.errors import ConfigError, RenderError
from swarmgate.models.routing.acme_hosts import CHALLENGE_PREFIX, THUMBPRINT, TOKEN_PATTERN
from swarmgate.models.routing.nginx_sizes import server_names_hash_sizes
from swarmgate.models.routing.route_types import PathRoute, RouteTable
from swarmgate.models.routing.traffic_key import DEFAULT_KEY, traffic_key
from swarmgate.models.settings.duration import format_seconds
from swarmgate.models.settings.extension import Extension
from swarmgate.models.settings.nginx_syntax import added_headers
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.code_cache import TemplateCodeCache
from swarmgate.renderers.passthrough import passthrough_context
from swarmgate.renderers.policy_zones import header_value, limit_zones, page_text, zone_name
from swarmgate.renderers.server_layout import (
    FAILOVER_CONNECT_MS,
    balanced_by_lua,
    failover_connect_ms,
    needs_own_server,
    pool_failover_ms,
    shares_a_server,
)
from swarmgate.renderers.upstream_blocks import upstream_blocks

TEMPLATES = Path(__file__).parent / "templates"
_WORD = re.compile(r"^[A-Za-z0-9._~*:/\[\]-]+$")
_SERVER_INFO = re.compile(r"^[A-Za-z0-9 ._/()+:-]{1,120}$")
# Where the agent keeps its inbox, status and auth include inside a proxy task (agent.sh's DIR).
CONTROL_DIR = "/var/lib/swarmgate"
# Where nginx writes the per-route traffic log that the agent counts (agent.sh's TRAFFIC): outside
# CONTROL_DIR, which a pushed config may name only in the control server's include.
TRAFFIC_DIR = "/var/run/swarmgate-traffic"
TRAFFIC_LOG = "traffic.log"
# The reserved server name of the control server; `.invalid` can never be a real host (RFC 2606).
CONTROL_HOST = "swarmgate-control.invalid"


class UnsafeValueError(RenderError):
    """A value about to be written into nginx syntax is outside the safe alphabet."""


@dataclass(frozen=True)
class RenderedConfig:
    """Rendered nginx configuration and the sha256 hex digest of its text (its content address)."""

    text: str
    digest: str

    @classmethod
    def of(cls, text: str) -> RenderedConfig:
        return cls(text=text, digest=hashlib.sha256(text.encode()).hexdigest())


def _word(value: object) -> str:
    text = str(value)
    if not _WORD.fullmatch(text):
        raise UnsafeValueError(f"refusing to write {text!r} into the nginx config")
    return text


def _word_or_empty(value: object) -> str:
    return "" if value in ("", None) else _word(value)


@jinja2.pass_context
def _tls_file(context: jinja2.runtime.Context, secret: object) -> str:
    """`{{ name | tls_file }}`: the file nginx reads for a TLS secret named in the route table. The
    pipeline passes `tls_paths` (the certificate courier's `CERTS_DIR/<ID>.pem` in hitless mode);
    without it, Swarm's own mount `/run/secrets/NAME`."""
    paths = context.get("tls_paths") or {}
    return _word(paths.get(str(secret), f"/run/secrets/{_word(secret)}"))


def _word_list(value: object) -> str:
    return ", ".join(_word(part) for part in str(value).split(", "))


def _environment(sandboxed: bool) -> jinja2.Environment:
    env = (SandboxedEnvironment if sandboxed else jinja2.Environment)(
        loader=None if sandboxed else jinja2.FileSystemLoader(TEMPLATES),
        bytecode_cache=None if sandboxed else TemplateCodeCache(),  # compiled once per template, not per process
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["word"] = _word
    env.filters["word_or_empty"] = _word_or_empty
    env.filters["word_list"] = _word_list
    env.filters["tls_file"] = _tls_file
    env.filters["seconds"] = format_seconds
    env.filters["seconds_or_none"] = lambda seconds: None if seconds is None else format_seconds(seconds)
    env.filters["chomp"] = lambda text: str(text).rstrip("\n")
    env.filters["header_value"] = header_value
    env.filters["page_text"] = page_text
    env.filters["zone_name"] = zone_name
    return env


_DEFAULT_ENV = _environment(sandboxed=False)
# The code of `LuaBalancer`'s balancer, written into the config's `init_by_lua_block` as it is here.
LUA_BALANCER = (TEMPLATES / "balancer.lua").read_text(encoding="utf-8")
_SANDBOX_ENV = _environment(sandboxed=True)


def custom_template(ext: Extension, observed: ObservedState) -> str | None:
    """The text of the Swarm config named by the extension's `Template`, or None when unset."""
    if not ext.template:
        return None
    config = observed.config_named(ext.template)
    if config is None:
        raise ConfigError(f"Extensions.{ext.name}.Template: no Swarm config named {ext.template!r}")
    try:
        return config.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"Extensions.{ext.name}.Template: Swarm config {ext.template!r} is not UTF-8"
        ) from None


def server_names_hash(table: RouteTable, configured: int) -> tuple[int, int]:
    """`server_names_hash_bucket_size` and `_max_size` big enough for every host in the table (and the
    control server's name): a single long host name must not make nginx reject the whole config."""
    return server_names_hash_sizes([*(h.host for h in table.hosts), CONTROL_HOST], configured)


@dataclass(frozen=True)
class LuaBalancer:
    """What the template needs for `LuaBalancer`: the balancer's code (package data, admitted by the
    agent by its sha256) and the pools it serves, by name."""

    code: str
    pools: tuple[PathRoute, ...]
    names: frozenset[str]


def lua_balancer(ext: Extension, table: RouteTable) -> LuaBalancer | None:
    """The balancer of this config; None when `LuaBalancer` is off or would serve no pool (the config
    is then what stock nginx runs, and the bootstrap config never changes)."""
    if not ext.config.lua_balancer:
        return None
    # A canary's pool is chosen by a variable that names its `upstream` block (policy.j2's canary_pass).
    canaries = {route.canary.pool for route in table.pools if route.canary is not None}
    pools = tuple(route for route in table.pools if balanced_by_lua(route) and route.pool not in canaries)
    if not pools:
        return None
    return LuaBalancer(code=LUA_BALANCER.rstrip("\n"), pools=pools, names=frozenset(r.pool for r in pools))


def control_server(ext: Extension, *, control_dir: str = CONTROL_DIR, listen: str | None = None,
                   peers: Sequence[str] = ()) -> str:
    """The control server's `server` block, indented for the `http` block: on the TLS listener
    (`listen`, default `TargetSSLPort ssl`; the SSL-passthrough socket when the stream module takes
    that port), the agent's own file inside it, and, given `peers` (addresses or networks), access
    for those only."""
    networks = sorted({str(ipaddress.ip_network(p, strict=False)) for p in peers})
    return _DEFAULT_ENV.get_template("control.conf.j2").render(
        dir=_word(control_dir), control_host=CONTROL_HOST,
        control_listen=listen or f"{ext.target_ssl_port} ssl", control_peers=networks)


def render_nginx(
    ext: Extension,
    table: RouteTable,
    *,
    server_info: str,
    template_text: str | None = None,
    control_dir: str = CONTROL_DIR,
    control_peers: Sequence[str] = (),
    tls_paths: Mapping[str, str] | None = None,
    acme_thumbprint: str | None = None,
    traffic_dir: str = TRAFFIC_DIR,
) -> RenderedConfig:
    """The whole nginx.conf of one extension's proxy for one route table; `control_peers`: who may
    reach its control server (none given: every holder of the channel key, as in the bootstrap);
    `tls_paths`: per TLS secret name, the file nginx reads (none given: `/run/secrets/NAME`);
    `acme_thumbprint`: the ACME account's (RFC 7638), given when ACME is configured: every port-80
    server then answers HTTP-01 challenges itself (`token.thumbprint`), with no per-challenge push.
    `traffic_dir`: where the agent counts the traffic log (TrafficMetrics, only where an agent runs)."""
    if acme_thumbprint is not None and not THUMBPRINT.fullmatch(acme_thumbprint):
        raise RenderError("an ACME account thumbprint is 43 base64url characters")
    if not _SERVER_INFO.fullmatch(server_info):
        raise RenderError(
            f"server_info must be printable words (like 'swarmgate/0.1.0 linux/amd64'): {server_info!r}"
        )
    bucket, max_size = server_names_hash(table, ext.config.server_names_hash_bucket_size)
    lua = lua_balancer(ext, table)
    # With the balancer, a host shares the server only if the balancer serves its pool (or it has no task).
    plain = [h for h in table.hosts if not needs_own_server(h)
             and (lua is None or not h.paths[0].upstreams or h.paths[0].pool in lua.names)]
    shared = plain if shares_a_server(ext, len(plain)) else []
    shared_names = {h.host for h in shared}
    # The balancer sets the connect timeout of its pools itself (the peers carry it), so that a scale
    # stays a change of peers only; every other pool sets it in its location.
    def failover(route: PathRoute) -> int | None:
        return None if lua is not None and route.pool in lua.names else failover_connect_ms(ext, route)

    # Shared hosts whose pool fails over fast get a second shared server (the same map picks the pool):
    # nginx takes no variable in proxy_connect_timeout.
    fast = [h for h in shared if failover(h.paths[0]) is not None]
    # By name (unique in a table): `h not in fast` compared whole HostRoutes, 10,000 x 10,000 of them.
    fast_names = {h.host for h in fast}
    shared_servers = [(hosts, ms) for hosts, ms in (([h for h in shared if h.host not in fast_names], None),
                                                   (fast, min(FAILOVER_CONNECT_MS, ext.config.connect_timeout * 1000)))
                      if hosts]
    # The map of pools to peers holds pool names: its buckets must fit them as well as the host names.
    map_bucket, map_max = (bucket, max_size) if lua is None else server_names_hash_sizes(
        [*(h.host for h in table.hosts), *(r.pool for r in table.pools)], ext.config.server_names_hash_bucket_size)
    passthrough = passthrough_context(ext, table)
    # Only a proxy run by the agent has the control server (hitless delivery, which needs host-mode
    # publishing: `planning.delivery_mode.delivers_in_place`). Elsewhere nothing would give it its TLS.
    pushed = ext.hitless_service_update and ext.publish_mode == "host"
    control = control_server(ext, control_dir=control_dir, listen=str(passthrough["tls_listen"]),
                             peers=control_peers) if pushed else ""
    # The agent counts and rotates the traffic log; without it (plain delivery) the log would only grow.
    traffic_log = f"{_word(traffic_dir)}/{TRAFFIC_LOG}" if pushed and ext.config.traffic_metrics else None
    context = {"ext": ext, "o": ext.config, "table": table, "server_info": server_info,
               "server_names_hash_bucket_size": bucket, "server_names_hash_max_size": max_size,
               "swarmgate_control": control, "tls_paths": dict(tls_paths or {}),
               "acme": {"thumbprint": acme_thumbprint, "prefix": CHALLENGE_PREFIX, "token": TOKEN_PATTERN}
               if acme_thumbprint else None,
               "shared_hosts": shared, "shared_servers": shared_servers,
               "failover_connect_ms": failover, "pool_failover_ms": lambda route: pool_failover_ms(ext, route),
               "own_hosts": [h for h in table.hosts if h.host not in shared_names],
               "global_headers": added_headers(ext.config.http_options), "limit_zones": limit_zones(table),
               "lua": lua, "map_hash_bucket_size": map_bucket, "map_hash_max_size": map_max,
               "upstream_pools": [r for r in table.pools if r.upstreams and (lua is None or r.pool not in lua.names)],
               # Shared hosts whose tasks speak TLS: a second map picks the scheme.
               "shared_tls_backends": [h for h in shared if h.paths[0].backend_tls is not None],
               "upstream_blocks": lambda pools: upstream_blocks(
                   pools, word=_word, keepalive=ext.config.upstream_keepalive,
                   keepalive_timeout=ext.config.upstream_keepalive_timeout),
               "traffic_log_path": traffic_log, "traffic_key": traffic_key, "default_key": DEFAULT_KEY,
               "route_keys": traffic_log is not None or ext.config.access_log_format == "json",
               **passthrough}
    try:
        if template_text is None:
            text = _DEFAULT_ENV.get_template("nginx.conf.j2").render(context)
        else:
            text = _SANDBOX_ENV.from_string(template_text).render(context)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"Extensions.{ext.name}.Template: {type(exc).__name__}: {exc}") from None
    if pushed and control.strip() not in text:
        # Without the control server the operator could never push another config to this proxy.
        raise ConfigError(
            f"Extensions.{ext.name}.Template: the output lacks {{{{ swarmgate_control }}}} (emit it inside "
            "the http block): hitless delivery pushes every config through swarmgate's control server"
        )
    return RenderedConfig.of(text)


def render_bootstrap(ext: Extension, *, server_info: str, control_dir: str = CONTROL_DIR) -> RenderedConfig:
    """What a proxy starts with when it has no saved config: the same listeners and the control
    server, 503 for every host."""
    return render_nginx(ext, RouteTable(cluster=ext.service_cluster), server_info=server_info,
                        control_dir=control_dir)

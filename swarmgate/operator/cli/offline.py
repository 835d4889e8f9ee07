"""The offline commands: check-config, render, routes (I/O: reads files, prints to stdout/stderr).

`render` and `routes` read a TOML config and a state file of Docker Engine API JSON and call the
function a live pass calls (`planning/decide.py`'s `decide_pass`, with the same garbage-collector
pause), so what they print is what the operator would do. `check-config` has no snapshot: it renders
each extension over a sample route table. Each returns the process exit code through
`exits.guarded`: 0, or 2 with one line on stderr for bad input.
"""

from __future__ import annotations

import datetime
import sys
from typing import TextIO

from swarmgate.errors import ConfigError, RenderError
from swarmgate.models.routing.route_types import PathRoute, RouteTable
from swarmgate.models.settings.config import Config, load_config
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.state_file import load_state_file
from swarmgate.operator.cli.exits import guarded
from swarmgate.operator.control.gc_pause import collection_paused
from swarmgate.operator.planning.decide import decide_pass
from swarmgate.operator.planning.desired import DesiredState
from swarmgate.renderers.nginx import render_nginx

SERVER_INFO = "swarmgate/0.0.0 linux/amd64"  # any valid value: what is checked is the options around it
# The snapshot and the pass of a `render` or `routes` whose process ends without teardown once the
# command returns (cli/main.py, `end_process`): held here, nothing frees them object by object (at
# 10,000 services ~0.1 s of CPU), nor the state file's parsed JSON (`parse_state`'s `hold`). Empty in
# any other process.
HELD_TO_THE_END: list[object] = []


def cmd_check_config(path: str, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate a config file: prints `OK` plus any notices, or one error line (exit 2)."""
    out, err = out or sys.stdout, err or sys.stderr

    def body() -> None:
        config = load_config(path)
        notices = [*config.notices, *check_with_nginx(config, source=path)]
        print(f"{path}: OK ({len(config.extensions)} extension(s))", file=out)
        for notice in notices:
            print(f"notice: {notice}", file=out)

    return guarded(body, err)


def check_with_nginx(config: Config, *, source: str) -> list[str]:
    """Render each extension's default template over a representative route table and run `nginx -t`
    on it (with the proxy-only paths substituted, as the operator does before it publishes).

    The model already bounds every typed value by what nginx takes; this is what vouches for the raw
    option lists and the log formats as a whole. A rejection is a `ConfigError` naming the
    extension; no nginx on this machine is a notice, not an error."""
    # Imported here: only check-config runs nginx (render and routes need neither module, nor the
    # subprocess, tempfile and shutil modules validate.py brings).
    from swarmgate.renderers.sample import sample_route_table
    from swarmgate.renderers.validate import NginxRejectedConfig, NginxUnavailable, nginx_check

    notices: list[str] = []
    for name, ext in sorted(config.extensions.items()):
        if ext.template:
            notices.append(f"Extensions.{name}.Template: the custom template is a Swarm config, checked with "
                           "nginx -t by the operator before it publishes")
        try:
            text = render_nginx(ext, sample_route_table(ext.service_cluster), server_info=SERVER_INFO).text
            nginx_check(text)
        except NginxUnavailable as exc:
            return [*notices, f"not checked with nginx -t: {exc}"]
        except (NginxRejectedConfig, RenderError) as exc:
            raise ConfigError(f"{source}: Extensions.{name}.Config: nginx -t rejects the config these options "
                              f"render to: {exc}") from None
    return notices


def _extensions(config: Config, name: str | None) -> list[Extension]:
    if name is None:
        return [config.extensions[k] for k in sorted(config.extensions)]
    if name not in config.extensions:
        known = ", ".join(sorted(config.extensions))
        raise ConfigError(f"no extension named {name!r} (the config has: {known})")
    return [config.extensions[name]]


def cmd_render(config_path: str, state_path: str, extension: str | None = None, *,
               out: TextIO | None = None, err: TextIO | None = None, hold: bool = False) -> int:
    """Print the rendered nginx config of every extension (or of one). `hold`: the process ends
    without teardown once this returns (`HELD_TO_THE_END`)."""
    out, err = out or sys.stdout, err or sys.stderr

    def body() -> None:
        config = load_config(config_path)
        chosen = _extensions(config, extension)
        with collection_paused():
            observed = load_state_file(state_path, hold=HELD_TO_THE_END if hold else None)
            # The time of the run, as a live pass would judge certificates by (which one each host serves).
            result = decide_pass(config, observed, now=datetime.datetime.now(datetime.UTC))
        if hold:
            HELD_TO_THE_END.append((observed, result))
        desired = result.desired
        for ext in chosen:
            wanted = desired.extension(ext.name)
            if wanted.render_error is not None:
                raise ConfigError(wanted.render_error)
            if len(chosen) > 1:
                print(f"# ---- extension {ext.name}: sha256 {wanted.rendered.digest}", file=out)
            out.write(wanted.rendered.text)

    return guarded(body, err)


def format_route_table(ext: Extension, table: RouteTable, observed: ObservedState | None = None) -> str:
    """The route table as text a person reads: hosts, paths, upstreams, set-aside services, notices."""

    def where(node_id: str) -> str:
        found = observed.node(node_id) if observed is not None else None
        return found.hostname if found is not None and found.hostname else node_id[:12]

    lines = [f"extension {ext.name} (service cluster {table.cluster or '(none)'}; "
             f"listens on {ext.target_port}/{ext.target_ssl_port})"]
    if not table.hosts and table.default_backend is None:
        lines.append("  no routes")
    for host in table.hosts:
        tls = f"  tls: /run/secrets/{host.tls.cert} /run/secrets/{host.tls.key}" if host.tls else ""
        https = "".join([", http → https" if host.ssl_only else "", f", hsts {host.hsts.header}" if host.hsts else ""])
        lines.append(f"  {host.host}{tls}{https}")
        if host.redirect:
            code = f" ({host.redirect_code})" if host.redirect_code != 302 else ""
            lines.append(f"    redirect → {host.redirect}{code}")
        for route in host.paths:
            extras = [f"strip {route.strip_prefix}" if route.strip_prefix else "",
                      "websocket" if route.websocket else "",
                      f"sticky cookie {route.sticky_cookie}" if route.sticky_cookie else "",
                      "ip_hash" if route.ip_hash else "",
                      (f"tls to tasks, verified with {route.backend_tls.ca}" if route.backend_tls.ca
                       else "tls to tasks") if route.backend_tls else ""]
            extra = "".join(f", {e}" for e in [*extras, *_policy_words(route)] if e)
            lines.append(f"    {route.path} → {', '.join(route.services)}{extra}")
            pools = [route] if route.canary is None or route.canary_match is None else [route, route.canary]
            for pool in pools:
                if pool is route.canary and route.canary_match is not None:
                    match = route.canary_match
                    lines.append(f"    {route.path} canary ({match.kind} {match.name}={match.value}) → "
                                 f"{', '.join(pool.services)}")
                if not pool.upstreams:
                    lines.append("      (no running task: 503)")
                for index, up in enumerate(pool.upstreams):
                    weight = pool.params[index].weight if pool.params else None
                    lines.append(f"      {up.address}:{up.port}  {up.service} "
                                 f"task {up.task_id[:12]} on {where(up.node_id)}"
                                 + (f"  weight {weight}" if weight is not None else ""))
    if table.default_backend is not None:
        d = table.default_backend
        lines.append(f"  (default backend) → {', '.join(d.services)}")
        for up in d.upstreams:
            lines.append(f"      {up.address}:{up.port}  {up.service} task {up.task_id[:12]} on {where(up.node_id)}")
    if table.set_aside:
        lines.append("  set aside:")
        lines.extend(f"    {s.service}: {s.reason}" for s in table.set_aside)
    if table.notices:
        lines.append("  notices:")
        lines.extend(f"    {n}" for n in table.notices)
    return "\n".join(lines) + "\n"


def _policy_words(route: PathRoute) -> list[str]:
    """What a location enforces, in a few words (`swarmgate.*` policy labels)."""
    p = route.policy
    if p is None:
        return []
    timeouts = [f"{name} {ms}ms" for name, ms in (("connect", p.connect_timeout_ms), ("read", p.read_timeout_ms),
                                                  ("send", p.send_timeout_ms)) if ms is not None]
    return [f"basic auth ({p.auth_secret})" if p.auth_secret else "",
            f"deny {' '.join(p.deny)}" if p.deny else "", f"allow only {' '.join(p.allow)}" if p.allow else "",
            f"rate {p.rate.nginx_rate} burst {p.rate.burst}" if p.rate else "",
            f"{p.connections} connections" if p.connections else "",
            f"body at most {p.max_body} bytes" if p.max_body is not None else "",
            f"headers {' '.join(name for name, _ in p.headers)}" if p.headers else "",
            f"error pages {' '.join(f'{e.code}={e.config}' for e in p.error_pages)}" if p.error_pages else "",
            f"timeouts {' '.join(timeouts)}" if timeouts else ""]


def routes_text(config: Config, observed: ObservedState, desired: DesiredState | None = None) -> str:
    desired = desired or decide_pass(config, observed, now=datetime.datetime.now(datetime.UTC)).desired
    text = "\n".join(format_route_table(ext, desired.extension(ext.name).route_table, observed)
                     for ext in _extensions(config, None))
    if desired.unclaimed:
        text += "\nnot routed by any extension:\n" + "".join(f"  {s.service}: {s.reason}\n"
                                                              for s in desired.unclaimed)
    return text


def cmd_routes(config_path: str, state_path: str, *, out: TextIO | None = None,
               err: TextIO | None = None, hold: bool = False) -> int:
    """Print every extension's route table, with set-aside services and their reasons. `hold`: as
    for `cmd_render`."""
    out, err = out or sys.stdout, err or sys.stderr

    def body() -> None:
        config = load_config(config_path)
        with collection_paused():
            observed = load_state_file(state_path, hold=HELD_TO_THE_END if hold else None)
            desired = decide_pass(config, observed, now=datetime.datetime.now(datetime.UTC)).desired
            text = routes_text(config, observed, desired)
        if hold:
            HELD_TO_THE_END.append((observed, desired))
        out.write(text)

    return guarded(body, err)

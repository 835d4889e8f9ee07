"""The configurations `bench/peers.py` runs on loopback (pure: text in, text out).

* the backend: nginx answering `200 ok` to everything, as fast as nginx answers anything;
* the peers: a minimal hand-written nginx proxy, HAProxy and Caddy, each on its defaults plus what
  proxying to the backend needs;
* swarmgate: the seed's configuration (`lab/seed-config.toml`) and a state file of routed services
  whose `demo.local` task is the backend, which the offline renderer turns into the proxy's
  nginx.conf; and `loopback_rewrite`, the only change made to that render before it runs here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests import factories as f

DEMO_HOST = "demo.local"
DEMO_TARGET_PORT = 8080
LOOPBACK = "127.0.0.1"


# -- the backend and the peers


def backend_conf(port: int, prefix: Path) -> str:
    """nginx as the fast backend: one worker (the machine has 2 cores, shared with the client and the
    proxy), no access log, and keep-alive connections that are never closed for their request count."""
    return f"""worker_processes 1;
pid {prefix}/backend.pid;
error_log {prefix}/backend-error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    default_type text/plain;
    server {{
        listen {LOOPBACK}:{port} default_server;
        location / {{
            return 200 "ok\\n";
        }}
    }}
}}
"""


def minimal_nginx_conf(port: int, backend: int, prefix: Path) -> str:
    """The smallest nginx reverse proxy done right: one worker, like the seed's `WorkerProcesses = 1`;
    an upstream pool that keeps 64 idle connections, which needs HTTP/1.1 and an empty Connection
    header (nginx sends `close` otherwise); and no access log."""
    return f"""worker_processes 1;
pid {prefix}/minimal.pid;
error_log {prefix}/minimal-error.log warn;
events {{
    worker_connections 2048;
}}
http {{
    access_log off;
    upstream backend {{
        server {LOOPBACK}:{backend};
        keepalive 64;
    }}
    server {{
        listen {LOOPBACK}:{port} default_server;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_cfg(port: int, backend: int) -> str:
    """HAProxy on its defaults (threads: one per CPU; `http-reuse safe`), plus HTTP mode, one frontend
    and one backend. The timeouts are set because HAProxy warns without them; they never fire here."""
    return f"""global
    # no log lines: HAProxy logs nothing unless told to
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
frontend peers
    bind {LOOPBACK}:{port}
    default_backend backend
backend backend
    server backend {LOOPBACK}:{backend}
"""


def caddy_json(port: int, backend: int, data_dir: Path) -> str:
    """Caddy's `reverse_proxy` on its defaults (which keep upstream connections alive), with the admin
    endpoint off, no automatic HTTPS (a plain HTTP listener on loopback) and its storage in the temp
    directory. Caddy writes no access log unless told to."""
    doc: dict[str, Any] = {
        "admin": {"disabled": True},
        "storage": {"module": "file_system", "root": str(data_dir)},
        "apps": {"http": {"servers": {"peers": {
            "listen": [f"{LOOPBACK}:{port}"],
            "automatic_https": {"disable": True},
            "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": f"{LOOPBACK}:{backend}"}]}]}],
        }}}},
    }
    return json.dumps(doc, indent=2) + "\n"


# -- swarmgate's render


# Interlock's per-request extras that a configuration key turns off: the request id nginx draws for
# every request (`RequestIDs`), the five `x-*` info response headers (`HideInfoHeaders`) and the traffic
# log (`TrafficMetrics`, swarmgate's own). What stays: the access log (`AccessLogPath` takes a path, and
# the default already writes it in 4k chunks: bench/render-ablation.md) and the forwarded headers
# (`X-Real-IP`, `X-Forwarded-*`), which no key turns off.
NO_REQUEST_IDS = ("RequestIDs = false",)
LEAN = (*NO_REQUEST_IDS, "HideInfoHeaders = true", "TrafficMetrics = false")


def seed_toml(seed_text: str, *, upstream_keepalive: int | None = None, lua_balancer: bool = False,
              traffic_metrics: bool | None = None, options: Sequence[str] = ()) -> str:
    """The seed's configuration, with `UpstreamKeepalive`, `LuaBalancer` and `TrafficMetrics` added to its
    nginx options when given, then `options` (`KEY = VALUE` lines) as they are."""
    added = ([f"UpstreamKeepalive = {upstream_keepalive}"] if upstream_keepalive is not None else []) + (
        ["LuaBalancer = true"] if lua_balancer else []) + (
        [f"TrafficMetrics = {str(traffic_metrics).lower()}"] if traffic_metrics is not None else []) + list(options)
    if not added:
        return seed_text
    marker = "[Extensions.default.Config]"
    if marker not in seed_text:
        raise ValueError(f"the seed's configuration has no {marker} table")
    return seed_text.replace(marker, marker + "".join(f"\n      {line}" for line in added), 1)


def state_document(services: int, backend: int) -> dict[str, list[Any]]:
    """A state file (`swarmgate snapshot`'s format) of `services` routed services: `demo`, for
    `demo.local`, has one task whose node address and host port are the loopback backend; the others
    (`app-N.example.test`, 3 tasks each on 50 nodes, as in `make bench`) are routed to addresses that
    are never sent a request (198.18.0.0/15 is for benchmarks)."""
    from bench.core_pass import api_responses  # the 10k Swarm of `make bench`, built the same way

    demo = f.service("demo", {"com.docker.lb.hosts": DEMO_HOST, "com.docker.lb.port": str(DEMO_TARGET_PORT)})
    lo = f.node("bench-loopback", LOOPBACK)
    task = f.task(demo, lo["ID"], ports={DEMO_TARGET_PORT: backend})
    doc: dict[str, list[Any]] = {"services": [demo], "tasks": [task], "nodes": [lo]}
    if services > 1:
        others = api_responses(services - 1)
        for kind in ("services", "tasks", "nodes"):
            doc[kind].extend(json.loads(others[kind]))
    return doc


# -- the one change made to swarmgate's render before it runs here

_USER = re.compile(r"^(\s*)user\s+[^;]+;", re.M)
_PID = re.compile(r"^(\s*)pid\s+[^;]+;", re.M)
# `listen [address:]port [options];`: the port is what the proxy task publishes on the node.
_LISTEN = re.compile(r"^(\s*)listen\s+(?:(\S+):)?(\d+)((?:\s+[^;\s]+)*)\s*;", re.M)
_CONTROL_INCLUDE = re.compile(r"^(\s*)include\s+/var/lib/swarmgate/control/\*\.conf;", re.M)
# Debian's dynamic modules (LuaBalancer's lua-nginx-module): `load_module modules/...`, relative to the prefix.
_MODULES_INCLUDE = re.compile(r"^(\s*)include\s+/etc/nginx/modules-enabled/\*\.conf;", re.M)
MODULES_DIR = Path("/usr/lib/nginx/modules")
# A log written to a file (not /dev/stdout or /dev/stderr): the file lives in the proxy's container.
_LOG_FILE = re.compile(r"^(\s*)(error_log|access_log)\s+(/(?!dev/)[^;\s]+)", re.M)
# Machine-bound lines this rewrite has no place for here: a template that adds them needs it extended.
_UNPLACED = re.compile(r"^\s*(?:ssl_certificate|ssl_certificate_key|ssl_dhparam|ssl_trusted_certificate|"
                       r"ssl_client_certificate)\s+/run/secrets/\S*;|^\s*listen\s+\[|^\s*include\s+(?!/var/lib/"
                       r"swarmgate/control/|/etc/nginx/modules-enabled/)", re.M)


def loopback_rewrite(text: str, *, ports: Mapping[int, int], prefix: Path, tls: tuple[Path, Path], user: str) -> str:
    """swarmgate's rendered nginx.conf as it runs on this machine's loopback. Exactly these lines change:

    * `user nginx;` → `user <user>;`: the proxy image's `nginx` user need not exist here;
    * `pid /var/run/proxy.pid;` → `pid <prefix>/nginx.pid;`: a path of the proxy's container;
    * `listen [address:]PORT ...;` → `listen 127.0.0.1:ports[PORT] ...;`: the proxy's published ports
      (80, 443) become free loopback ports, one for one, so servers that shared a listener still
      share it, and every option after the port (`ssl`, `default_server`) stays;
    * `include /var/lib/swarmgate/control/*.conf;` → a throwaway certificate pair: that file is the
      agent's (the control server's TLS and locations) and exists only in a proxy task; nginx needs a
      certificate to start a TLS listener, and no request is sent there;
    * an `error_log`/`access_log` to a file (not `/dev/...`) → the same name under `<prefix>/logs/`;
    * `include /etc/nginx/modules-enabled/*.conf;` stays, and `<prefix>/modules` becomes a link to
      Debian's modules folder, which the included `load_module modules/...` lines name relative to
      the prefix (as in the proxy image).

    Everything else runs as rendered: workers, events, upstreams, maps, servers, locations, headers,
    and logs to /dev/stdout (the runner makes nginx's stdout a pipe that another process reads, so a
    logged request costs nginx what it costs in the proxy task, where Docker reads the pipe). A line
    bound to the proxy's machine that this function cannot place (TLS secrets, an IPv6 listener,
    other includes) raises `ValueError`, so a template change is noticed rather than measured wrong.
    """
    unplaced = _UNPLACED.search(text)
    if unplaced is not None:
        raise ValueError(f"the loopback rewrite does not know how to run this line here: {unplaced.group(0).strip()}")
    if _MODULES_INCLUDE.search(text) and not (prefix / "modules").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "modules").symlink_to(MODULES_DIR)
    out = _USER.sub(lambda m: f"{m.group(1)}user {user};", text)
    out = _PID.sub(lambda m: f"{m.group(1)}pid {prefix / 'nginx.pid'};", out)

    def listen(m: re.Match[str]) -> str:
        port = int(m.group(3))
        if port not in ports:
            raise ValueError(f"no loopback port given for the proxy's port {port}")
        return f"{m.group(1)}listen {LOOPBACK}:{ports[port]}{m.group(4)};"

    out = _LISTEN.sub(listen, out)
    cert, key = tls
    out = _CONTROL_INCLUDE.sub(lambda m: f"{m.group(1)}ssl_certificate {cert}; ssl_certificate_key {key};", out)
    return _LOG_FILE.sub(lambda m: f"{m.group(1)}{m.group(2)} {prefix / 'logs' / Path(m.group(3)).name}", out)

"""The operator's own HTTP endpoint on `ListenAddr` (does network I/O: a threaded HTTP server).

Read-only, no key material: proxies never call it (the operator pushes to them, see `pusher`),
so nothing here changes what any proxy serves.

- `GET /v1/status`: JSON, extensions → current digest, convergence times, and the proxy tasks (node,
  hostname, served digest, current?, last seen, last error), as their agents said.
- `GET /healthz`: 200 while the server runs; `GET /readyz`: 200 or 503 by `ready()`.
- plus `extra_routes` (GET), e.g. /metrics.

404 for unknown paths, 405 for any other method.
"""

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from swarmgate.errors import ConfigError
from swarmgate.operator.delivery.proxystate import ProxyState

log = logging.getLogger("swarmgate.endpoint")

ExtraRoute = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)


def parse_listen_addr(listen_addr: str) -> tuple[str, int]:
    """`:8080` (all interfaces), `0.0.0.0:8080`, `127.0.0.1:0` (any free port) → (host, port)."""
    host, sep, port = listen_addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"ListenAddr {listen_addr!r}: expected [host]:port, e.g. ':8080'")
    return host, int(port)


@dataclass
class EndpointServer:
    """A running endpoint; `shutdown()` stops it."""

    httpd: ThreadingHTTPServer
    thread: threading.Thread = field(repr=False)

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(
    listen_addr: str,
    store: ProxyState,
    *,
    extra_routes: Mapping[str, ExtraRoute] | None = None,
    ready: Callable[[], bool] | None = None,
) -> EndpointServer:
    """Bind `listen_addr` and serve in a daemon thread; returns once the socket is listening."""
    host, port = parse_listen_addr(listen_addr)
    routes: dict[str, ExtraRoute] = {
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
        "/readyz": lambda: (200, "text/plain", b"ready\n") if ready is None or ready()
        else (503, "text/plain", b"not ready\n"),
        "/v1/status": lambda: (200, "application/json",
                               json.dumps(status_document(store), indent=2, sort_keys=True).encode() + b"\n"),
    }
    routes.update(extra_routes or {})
    httpd = ThreadingHTTPServer((host, port), _make_handler(routes))
    httpd.daemon_threads = True
    # A short poll interval only bounds how long shutdown() waits for the serving loop.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              name="swarmgate-endpoint", daemon=True)
    thread.start()
    log.info("endpoint listening on %s:%d", host or "*", httpd.server_address[1])
    return EndpointServer(httpd, thread)


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
                }
                for p in store.proxies(cluster)
            ],
        }
    return {"clusters": clusters}


def _make_handler(routes: dict[str, ExtraRoute]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "swarmgate"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path not in routes:
                return self._send(404, b"unknown path\n")
            code, ctype, body = routes[path]()
            self._send(code, body, ctype)

        def _refuse(self) -> None:
            self._send(405, b"use GET\n")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code, HTTPStatus(code).phrase)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("client %s left before the answer", self.address_string())

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes and health checks are too frequent for INFO.
            log.debug("%s " + format, self.address_string(), *args)

    return Handler

"""The operator's own HTTP endpoint on `ListenAddr` (does network I/O: a threaded HTTP server).

It serves the running operator's state to people and their tools, not to the proxies: read-only,
no key material, and proxies never call it (the operator pushes to them, see `delivery/pusher.py`),
so nothing here changes what any proxy serves. The routes themselves come from the operator that
owns the state they show (`control/operator.py`): `/readyz` (`control/readiness.py`), `/v1/status`
(`delivery/status.py` plus the last pass's findings), `/v1/leader`, `/metrics`.

`GET /healthz` is 200 while the server runs; 404 for unknown paths, 405 for any method but GET.
A page route (the status page) is also handed the query's parameters; every answer says `nosniff`,
and an HTML one carries the page's Content-Security-Policy (no script, nothing from elsewhere).
"""

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from swarmgate.errors import ConfigError

log = logging.getLogger("swarmgate.endpoint")

Route = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)
PageRoute = Callable[[dict[str, str]], tuple[int, str, bytes]]  # (query parameters) -> the same
HTML_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
               "frame-ancestors 'none'")


def json_answer(document: Any) -> tuple[int, str, bytes]:
    """A 200 answer of `document` as indented JSON, keys sorted."""
    return 200, "application/json", json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


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


def serve(listen_addr: str, routes: Mapping[str, Route],
          pages: Mapping[str, PageRoute] | None = None) -> EndpointServer:
    """Bind `listen_addr` and serve `routes` and `pages` (GET, plus `/healthz`) in a daemon thread;
    returns once the socket is listening."""
    host, port = parse_listen_addr(listen_addr)
    table: dict[str, Route] = {"/healthz": lambda: (200, "text/plain", b"ok\n"), **routes}
    httpd = ThreadingHTTPServer((host, port), _make_handler(table, dict(pages or {})))
    httpd.daemon_threads = True
    # A short poll interval only bounds how long shutdown() waits for the serving loop.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              name="swarmgate-endpoint", daemon=True)
    thread.start()
    log.info("endpoint listening on %s:%d", host or "*", httpd.server_address[1])
    return EndpointServer(httpd, thread)


def _make_handler(routes: dict[str, Route], pages: dict[str, PageRoute]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "swarmgate"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            if path in pages:
                # The first value of each parameter; a malformed query is no query.
                query: dict[str, str] = {}
                try:
                    for key, value in parse_qsl(url.query, max_num_fields=20):
                        query.setdefault(key, value)
                except ValueError:
                    query = {}
                code, ctype, body = pages[path](query)
                return self._send(code, body, ctype)
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
            self.send_header("X-Content-Type-Options", "nosniff")
            if ctype.startswith("text/html"):
                self.send_header("Content-Security-Policy", HTML_POLICY)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                log.debug("client %s left before the answer", self.address_string())

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes and health checks are too frequent for INFO.
            log.debug("%s " + format, self.address_string(), *args)

    return Handler

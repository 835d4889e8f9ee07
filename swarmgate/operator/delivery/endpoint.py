"""The operator's HTTP endpoint for proxy agents (does network I/O: a threaded HTTP server).

Routes (protocol version 1; the agent's side is `operator/delivery/agent.sh`):

- `GET /v1/proxy/config?cluster=C&task=T&node=N&hostname=H&have=D&failed=F` (bearer token):
  200 at once if the cluster's current digest is neither `have` (served) nor `failed` (rejected by
  `nginx -t`), with body `swarmgate/1 config DIGEST\\n` followed by the config text; otherwise held
  up to `hold_seconds`, answering as soon as a new config is published, else with body
  `swarmgate/1 unchanged DIGEST\\n` (DIGEST `-` when nothing is published). Always 200 when
  authorized because busybox wget treats every non-2xx status as a failure and drops its body.
- `POST /v1/proxy/report?cluster=C&task=T&node=N&hostname=H&digest=D&status=ok|error` (bearer
  token), body: the message (nginx -t's output), text, truncated to 4 KiB. 200 `ok\\n`.
- `GET /v1/status`: read-only JSON, no token and no secrets: clusters → digest, convergence
  times, proxies (node, hostname, served digest, current?, last seen, last error).
- plus `extra_routes` (GET, no token), e.g. /metrics, /healthz.

400 with a one-line reason for bad parameters, 401 for a missing or wrong token, 404 for unknown
paths, 405 for a wrong method. Tokens are never logged.
"""

import json
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from swarmgate.errors import ConfigError
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.token import TokenCheck

log = logging.getLogger("swarmgate.endpoint")

PROTOCOL = "swarmgate/1"
MAX_MESSAGE = 4096
MAX_BODY = 64 * 1024
# Swarm IDs, hostnames, cluster names and digests: nothing that needs quoting in a URL or a log.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}")
_DIGEST = re.compile(r"[A-Za-z0-9._:-]{0,200}")

ExtraRoute = Callable[[], tuple[int, str, bytes]]  # () -> (status, content type, body)
# A fixed check, or a callable giving the current token digest (None while the operator has not
# seen the token secret yet: every agent request is then refused and retried by the agent).
TokenSource = TokenCheck | Callable[[], str | None]


class BadRequest(Exception):
    """One-line reason for a 400."""


def parse_listen_addr(listen_addr: str) -> tuple[str, int]:
    """`:8080` (all interfaces), `0.0.0.0:8080`, `127.0.0.1:0` (any free port) → (host, port)."""
    host, sep, port = listen_addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"ListenAddr {listen_addr!r}: expected [host]:port, e.g. ':8080'")
    return host, int(port)


@dataclass
class _Params:
    query: Mapping[str, list[str]]

    def name(self, key: str, *, required: bool = True) -> str:
        value = self.query.get(key, [""])[-1]
        if not value and not required:
            return ""
        if not _NAME.fullmatch(value):
            raise BadRequest(f"parameter {key!r} is missing or not a plain name")
        return value

    def digest(self, key: str) -> str:
        value = self.query.get(key, [""])[-1]
        if not _DIGEST.fullmatch(value):
            raise BadRequest(f"parameter {key!r} is not a digest")
        return value


@dataclass
class EndpointServer:
    """A running endpoint; `shutdown()` stops it and releases held polls."""

    httpd: ThreadingHTTPServer
    store: ProxyState
    thread: threading.Thread = field(repr=False)

    @property
    def host(self) -> str:
        return str(self.httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def shutdown(self) -> None:
        self.store.close()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(
    listen_addr: str,
    store: ProxyState,
    token: TokenSource,
    *,
    hold_seconds: float = 20.0,
    extra_routes: Mapping[str, ExtraRoute] | None = None,
    ready: Callable[[], bool] | None = None,
) -> EndpointServer:
    """Bind `listen_addr` and serve in a daemon thread; returns once the socket is listening.

    Without `extra_routes` for them, `/healthz` answers 200 while the server runs and `/readyz`
    answers 200 or 503 by `ready()`.
    """
    host, port = parse_listen_addr(listen_addr)
    routes: dict[str, ExtraRoute] = {
        "/healthz": lambda: (200, "text/plain", b"ok\n"),
        "/readyz": lambda: (200, "text/plain", b"ready\n") if ready is None or ready()
        else (503, "text/plain", b"not ready\n"),
    }
    routes.update(extra_routes or {})
    handler = _make_handler(store, _token_matcher(token), hold_seconds, routes)
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True  # a held long poll must not keep the process alive
    # A short poll interval only bounds how long shutdown() waits for the serving loop.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              name="swarmgate-endpoint", daemon=True)
    thread.start()
    log.info("endpoint listening on %s:%d", host or "*", httpd.server_address[1])
    return EndpointServer(httpd, store, thread)


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


def _token_matcher(token: TokenSource) -> Callable[[str], bool]:
    if isinstance(token, TokenCheck):
        return token.matches

    def matches(presented: str) -> bool:
        digest = token()
        try:
            return digest is not None and TokenCheck(digest).matches(presented)
        except ValueError:  # a malformed digest label refuses everyone rather than crashing
            return False

    return matches


def _make_handler(
    store: ProxyState, token_matches: Callable[[str], bool], hold_seconds: float, extra: dict[str, ExtraRoute]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "swarmgate"

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            routes: dict[str, tuple[str, Callable[[_Params], None]]] = {
                "/v1/proxy/config": ("GET", self._config),
                "/v1/proxy/report": ("POST", self._report),
                "/v1/status": ("GET", self._status),
            }
            if url.path in extra and method == "GET":
                code, ctype, body = extra[url.path]()
                return self._send(code, body, ctype)
            if url.path not in routes:
                return self._send(404, b"unknown path\n")
            allowed, action = routes[url.path]
            if method != allowed:
                return self._send(405, f"use {allowed}\n".encode())
            if url.path != "/v1/status" and not self._authorized():
                return self._send(401, b"missing or wrong bearer token\n")
            try:
                action(_Params(parse_qs(url.query, keep_blank_values=True)))
            except BadRequest as err:
                self._send(400, f"{err}\n".encode())

        def _authorized(self) -> bool:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            return scheme.lower() == "bearer" and token_matches(token.strip())

        def _config(self, q: _Params) -> None:
            cluster, task = q.name("cluster"), q.name("task")
            node, hostname = q.name("node", required=False), q.name("hostname", required=False)
            have, failed = q.digest("have"), q.digest("failed")
            store.record_poll(cluster=cluster, task=task, node=node, hostname=hostname, have=have)
            cfg = store.wait_for_config(cluster, {have, failed}, hold_seconds)
            if cfg is None:
                current = store.current(cluster)
                digest = current.digest if current else "-"
                return self._send(200, f"{PROTOCOL} unchanged {digest}\n".encode(), digest=digest)
            body = f"{PROTOCOL} config {cfg.digest}\n{cfg.text}".encode()
            self._send(200, body, digest=cfg.digest)

        def _report(self, q: _Params) -> None:
            cluster, task = q.name("cluster"), q.name("task")
            node, hostname = q.name("node", required=False), q.name("hostname", required=False)
            digest, status = q.digest("digest"), q.query.get("status", [""])[-1]
            if status not in ("ok", "error"):
                raise BadRequest("parameter 'status' must be ok or error")
            length = self.headers.get("Content-Length", "0")
            if not length.isdigit() or int(length) > MAX_BODY:
                raise BadRequest(f"body must have a Content-Length of at most {MAX_BODY}")
            message = self.rfile.read(int(length))[:MAX_MESSAGE].decode("utf-8", "replace").strip()
            store.record_report(cluster=cluster, task=task, node=node, hostname=hostname,
                                digest=digest, ok=status == "ok", message=message)
            first_line = message.splitlines()[0] if message else ""
            log.info("proxy report: cluster=%s task=%s node=%s hostname=%s digest=%s status=%s %s",
                     cluster, task, node, hostname, digest, status, first_line)
            self._send(200, b"ok\n")

        def _status(self, _q: _Params) -> None:
            body = json.dumps(status_document(store), indent=2, sort_keys=True).encode() + b"\n"
            self._send(200, body, "application/json")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
                  *, digest: str | None = None) -> None:
            self.send_response(code, HTTPStatus(code).phrase)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if digest is not None:
                self.send_header("X-Swarmgate-Digest", digest)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # An agent that gave up on a held poll (its timeout, its task stopping) is normal.
                log.debug("client %s left before the answer", self.address_string())

        def log_message(self, format: str, *args: Any) -> None:
            # The request line holds no token (it travels in a header); polls are too frequent for INFO.
            log.debug("%s " + format, self.address_string(), *args)

    return Handler

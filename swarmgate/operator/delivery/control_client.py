"""One proxy task's control server, as the operator talks to it (network I/O: HTTPS to one proxy).

Every request is a new TLS connection to the task's node and host port, with SNI and Host
`swarmgate-control.invalid`: the channel key's certificate is the only server certificate trusted,
and it is presented as the client certificate (`channel_key`). A server that shows another
certificate raises `WrongKey` (it holds another generation of the key, or is not our agent).
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Callable

from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.proxystate import PublishedConfig
from swarmgate.operator.delivery.traffic_file import TRAFFIC_PATH
from swarmgate.operator.delivery.wire import AgentStatus, ProxyTarget
from swarmgate.renderers.nginx import CONTROL_HOST

MAX_STATUS_BYTES = 8192
# A traffic file has a few lines per route, upstream and status class: ~40 MiB would be 10,000 routes
# with 20 upstreams each. A larger one is refused whole, never read in part.
MAX_TRAFFIC_BYTES = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024


class PushError(Exception):
    """One request to a proxy's control server failed; the message says how (no key material in it)."""


class WrongKey(PushError):
    """The task's control server shows another certificate than this key's: it holds another
    generation of the channel key (or is not our agent at all)."""


def _microseconds() -> int:
    return time.time_ns() // 1000  # 16 digits today; the wire allows 18


class SequenceNumbers:
    """Push sequence numbers that only grow, across restarts too: seeded from the wall clock in µs,
    each one at least the previous plus one (a clock stepped back changes nothing)."""

    def __init__(self, clock: Callable[[], int] = _microseconds) -> None:
        self._clock = clock
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, self._clock())
            return self._last


class ControlClient:
    """HTTPS to one proxy task's control server: the channel key's certificate is the only one
    trusted, and it is presented as the client certificate (see `channel_key`)."""

    def __init__(self, target: ProxyTarget, key: ChannelKey, context: ssl.SSLContext, *, timeout: float) -> None:
        self.target = target
        self.key = key
        self._context = context
        self._timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, *,
                 whole_up_to: int | None = None) -> tuple[int, bytes]:
        """(HTTP code, body): the body's first MAX_STATUS_BYTES, or with `whole_up_to`, all of it or
        PushError (a counter file must never be read in part)."""
        conn = _ControlConnection(self.target.addr, self.target.port, context=self._context, timeout=self._timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": CONTROL_HOST})
            response = conn.getresponse()
            if whole_up_to is None:
                return response.status, response.read(MAX_STATUS_BYTES)
            if (response.length or 0) > whole_up_to:
                raise PushError(f"{method} {path}: the answer is larger than {whole_up_to} bytes")
            data = b""
            while chunk := response.read(READ_CHUNK):  # never a buffer of the limit's size
                data += chunk
                if len(data) > whole_up_to:
                    raise PushError(f"{method} {path}: the answer is larger than {whole_up_to} bytes")
            return response.status, data
        except ssl.SSLCertVerificationError as exc:
            raise WrongKey(f"{method} {path}: the task shows another certificate ({exc.verify_message})") from None
        except (OSError, http.client.HTTPException) as exc:
            raise PushError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def status(self) -> AgentStatus:
        code, body = self._request("GET", wire.STATUS_PATH)
        if code != 200:
            raise PushError(_refusal("GET", wire.STATUS_PATH, code))
        return wire.verify_status(body, self.key)  # ForgedStatus when the MAC does not verify

    def traffic(self) -> str:
        """The task's traffic file, as text (`traffic_file.parse_traffic` reads it)."""
        code, body = self._request("GET", TRAFFIC_PATH, whole_up_to=MAX_TRAFFIC_BYTES)
        if code == 404:
            raise NoTrafficLocation(_refusal("GET", TRAFFIC_PATH, code))
        if code != 200:
            raise PushError(_refusal("GET", TRAFFIC_PATH, code))
        return body.decode("ascii", errors="replace")

    def rekey(self, body: bytes) -> None:
        code, _ = self._request("PUT", wire.KEY_PATH, body)
        if code not in (201, 204):
            raise PushError(_refusal("PUT", wire.KEY_PATH, code))

    def put(self, config: PublishedConfig, *, term: int, seq: int) -> None:
        body = wire.push_body(self.key, task=self.target.task, term=term, seq=seq, digest=config.digest,
                              text=config.text)
        code, _ = self._request("PUT", wire.CONFIG_PATH, body)
        if code not in (201, 204):
            raise PushError(_refusal("PUT", wire.CONFIG_PATH, code))


class NoTrafficLocation(PushError):
    """The task's control server has no traffic location (404): an agent from before traffic metrics."""


class _ControlConnection(http.client.HTTPSConnection):
    """An HTTPS connection to an address whose certificate names the control server: TLS checks the
    name `swarmgate-control.invalid` (and sends it as SNI), not the address dialled."""

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=CONTROL_HOST)  # type: ignore[attr-defined]


def _refusal(method: str, path: str, code: int) -> str:
    if code == 403:
        # Past the mutual TLS, so only the address filter says this: the proxy's config does not list
        # the address this operator connects from.
        return (f"{method} {path}: HTTP 403: the proxy does not admit this operator's address; run the "
                "operator on a Swarm node, or list the address it connects from in ControlSources")
    return f"{method} {path}: HTTP {code}"

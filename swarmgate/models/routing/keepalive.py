"""How long the proxy keeps an idle connection to a pool's tasks (pure).

Upstream keep-alive has one race: a backend closes an idle connection at its own idle timeout just as
nginx sends a request on it. nginx retries an idempotent request (GET, HEAD, PUT...) on a fresh
connection, but never a POST, PATCH or LOCK, which would then fail with a 502; that refusal is right,
since the backend may have acted on the request. The race is avoided rather than retried: nginx
must close each idle connection *before* the backend does, so it never sends on one the backend is
closing. nginx's idle clock starts when it has read the response, the backend's when it wrote it, a
little earlier; hence a margin and not an equal timeout.

* By default every pool idles at most `UpstreamKeepaliveTimeout` (1.5 s), below the shortest idle
  timeout of the common servers (gunicorn's 2 s; Node, uvicorn and Apache close after 5 s).
* A service whose tasks close idle connections sooner says so with `swarmgate.backend_idle_timeout`;
  its pool then idles half that (the margin scales with it), and `0` turns keep-alive off for the pool.
  Pooled services (one host and path) share connections, so the shortest declared timeout counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from swarmgate.models.routing.label_values import LabelValueError, shown

# An idle timeout past an hour is not a timeout anyone needs to declare: the default is far below it.
MAX_IDLE_SECONDS = 3600.0
_IDLE = re.compile(r"(\d{1,7}(?:\.\d{1,3})?)(ms|s)?")
# The pool's idle time as a share of the backend's: the backend's clock starts a round trip and a
# response's processing earlier than nginx's, and a busy proxy fires its timers a little late.
MARGIN_SHARE = 0.5
# nginx keeps timers in milliseconds: below this a pool would never keep a connection worth having.
SHORTEST_POOL_IDLE = 0.001


def parse_backend_idle_timeout(value: str) -> float:
    """Seconds, from `2s`, `1.5s`, `500ms` or a bare number of seconds; `0`: the tasks keep no idle
    connection (the proxy opens one per request)."""
    match = _IDLE.fullmatch(value)
    if match is None:
        raise LabelValueError(f"expected the tasks' idle timeout such as 2s, 1.5s or 500ms (0: no keep-alive), "
                              f"got {shown(value)}")
    seconds = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
    if seconds > MAX_IDLE_SECONDS:
        raise LabelValueError(f"expected at most {MAX_IDLE_SECONDS:.0f}s, got {shown(value)}")
    return seconds


def shortest_idle(declared: Iterable[float | None]) -> float | None:
    """The idle timeout a pool must respect: the shortest its services declare (None: none declared)."""
    values = [d for d in declared if d is not None]
    return min(values) if values else None


def pool_idle_timeout(default: float, backend_idle: float | None) -> float | None:
    """nginx's `keepalive_timeout` for a pool whose tasks close idle connections after `backend_idle`
    seconds (None: not declared); None when the pool must keep no idle connection at all."""
    if backend_idle is None:
        return default
    pool = backend_idle * MARGIN_SHARE
    if pool < SHORTEST_POOL_IDLE:
        return None
    return min(default, round(pool, 3))

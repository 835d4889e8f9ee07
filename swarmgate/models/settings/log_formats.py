"""The access-log formats' defaults, and what `RequestIDs = false` changes in them (pure).

`$swarmgate_request_id` is the template's own variable: the client's `x-request-id`, else nginx's
`$request_id`, which draws 16 random bytes from OpenSSL (and a `getpid`) for every request that brings
none, 23% of nginx's instructions per request in the loopback benchmark (bench/render-ablation.md).
`RequestIDs = false` leaves that variable out of the config, so a log format may not name it then:
the default trace format logs the client's own header (`$http_x_request_id`) instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

REQUEST_ID_VARIABLE = "$swarmgate_request_id"
CLIENT_REQUEST_ID = "$http_x_request_id"

DEFAULT_MAIN_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"'
)
DEFAULT_TRACE_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for" '
    f"reqid={REQUEST_ID_VARIABLE} host=$host upstream=$upstream_addr "
    "request_time=$request_time upstream_response_time=$upstream_response_time"
)
# The same without a request id of nginx's own: the one the client sent, or "-".
TRACE_LOG_FORMAT_WITHOUT_REQUEST_IDS = DEFAULT_TRACE_LOG_FORMAT.replace(REQUEST_ID_VARIABLE, CLIENT_REQUEST_ID)

# Both spellings of the keys (alias, field name), as the model takes them.
_TRACE = ("TraceLogFormat", "trace_log_format")
_SWITCH = ("RequestIDs", "request_ids")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def request_ids_off(data: Mapping[str, object]) -> bool:
    """Whether the raw `Config` table turns request ids off (`RequestIDs = false`, exactly)."""
    return any(data.get(key) is False for key in _SWITCH)


def formats_without_request_ids(data: Mapping[str, object]) -> dict[str, object]:
    """The raw table with the default trace format that needs no request id, when it turns them off and
    sets no trace format of its own."""
    if not request_ids_off(data) or any(key in data for key in _TRACE):
        return dict(data)
    return {**data, "TraceLogFormat": TRACE_LOG_FORMAT_WITHOUT_REQUEST_IDS}


def names_request_id(log_format: str) -> bool:
    """Whether a log format names `$swarmgate_request_id` (`$name` or `${name}`, any case: nginx
    looks variables up by their lower-cased name)."""
    wanted = REQUEST_ID_VARIABLE[1:]
    return any((m.group(1) or m.group(2)).lower() == wanted for m in _VARIABLE.finditer(log_format))


def request_id_error(formats: Mapping[str, str]) -> str | None:
    """With `RequestIDs = false`: the one-line error for the first format (by key) that names the
    variable the config then leaves out, else None."""
    for key, value in formats.items():
        if names_request_id(value):
            return (f"{key} names {REQUEST_ID_VARIABLE}, which RequestIDs = false leaves out: use "
                    f"{CLIENT_REQUEST_ID} (the client's own x-request-id)")
    return None

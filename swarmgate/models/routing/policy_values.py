"""Typed values of swarmgate's per-route policy labels (`swarmgate.*`), and their parsers (pure).

Interlock has no label for any of these, so they live under swarmgate's own prefix. Every value is
parsed into numbers, Swarm names, networks, fixed words and strings of a closed alphabet before
anything reaches nginx (invariant 6), and every bound keeps one service's value from making nginx
refuse the whole config: a token longer than nginx's 4 KiB buffer, a zone or a timeout it refuses.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from swarmgate.models.routing.label_values import LabelValueError, shown

MAX_CIDRS = 100
MAX_RATE_PER_SECOND = 100_000
MAX_BURST = 100_000
MAX_CONNECTIONS = 65_535  # nginx: "connection limit must be less 65536"
MAX_BODY_BYTES = 64 * 1024 ** 3  # 64 GiB: larger is a typo; nginx's own ceiling is off_t
MAX_WEIGHT = 100  # the default: a weight can only lower a service's own share of a shared pool
MAX_FAILS = 1000
# nginx caps proxy_connect_timeout at 75 s by itself; read and send get one hour at most here.
MAX_CONNECT_SECONDS = 75
MAX_TIMEOUT_SECONDS = 3600
MAX_FAIL_TIMEOUT_SECONDS = 3600
MAX_HEADER_VALUE = 1024
MAX_RESPONSE_HEADERS = 32
ERROR_CODES = (502, 503, 504)

_INT = re.compile(r"[0-9]{1,12}")
_RATE = re.compile(r"([0-9]{1,7})r/(s|m)")
_SIZE = re.compile(r"([0-9]{1,12})([kKmMgG]?)")
_DURATION = re.compile(r"([0-9]{1,7})(ms|s|m|h)?")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# Printable ASCII, without what nginx would read as syntax inside a quoted string: `"` ends it, `\`
# escapes, `$` names a variable (an unknown one makes nginx refuse the config).
_HEADER_VALUE = re.compile(r"[ !#%&'()*+,\-./0-9:;<=>?@A-Z\[\]^_`a-z{|}~]*")
_CANARY = re.compile(r"(header|cookie):([A-Za-z0-9_-]{1,64})=([A-Za-z0-9._~-]{1,64})")
# Response headers a service may not add: the security and identity headers swarmgate or another
# label sets (a second Strict-Transport-Security, or a second x-request-id, would confuse or
# override the first), and the ones that frame the message itself. `Set-Cookie` is refused too: a
# fixed cookie on one path's responses reaches every service of the host (session fixation).
RESERVED_HEADERS = frozenset({
    "strict-transport-security", "x-request-id", "x-proxy-id", "x-server-info", "x-upstream-addr",
    "x-upstream-response-time", "content-length", "content-type", "content-encoding", "content-range",
    "transfer-encoding", "connection", "keep-alive", "upgrade", "trailer", "te", "date", "server",
    "location", "set-cookie", "www-authenticate", "proxy-authenticate", "retry-after", "vary",
})


@dataclass(frozen=True)
class RateLimit:
    """Requests per client address: `per_minute` (nginx's `r/m`) and the burst allowed beyond it."""

    per_minute: int
    burst: int = 0

    @property
    def nginx_rate(self) -> str:
        """The rate as nginx writes it: r/s when whole, else r/m (both are kept exactly)."""
        return f"{self.per_minute // 60}r/s" if self.per_minute % 60 == 0 else f"{self.per_minute}r/m"


@dataclass(frozen=True)
class Canary:
    """Requests whose header (or cookie) `name` equals `value` go to the canary services only."""

    kind: Literal["header", "cookie"]
    name: str
    value: str

    @property
    def variable(self) -> str:
        """The nginx variable holding the header's or cookie's value (names are [a-z0-9_] there)."""
        prefix = "http_" if self.kind == "header" else "cookie_"
        name = self.name.lower().replace("-", "_") if self.kind == "header" else self.name
        return prefix + name


def _whole(value: str, low: int, high: int, what: str) -> int:
    if not _INT.fullmatch(value) or not low <= int(value) <= high:
        raise LabelValueError(f"expected {what}, an integer {low}-{high}, got {shown(value)}")
    return int(value)


def parse_rate(value: str) -> int:
    """`10r/s` or `600r/m` → requests per minute, with at most two significant digits (`15r/s`,
    `1200r/m`, not `123r/s`): nginx ties a rate to its zone, so the digits bound how many zones all
    services together can make (about 900), whatever their number."""
    match = _RATE.fullmatch(value)
    number = int(match.group(1)) if match else 0
    per_minute = number * (60 if match and match.group(2) == "s" else 1)
    if not 1 <= per_minute <= MAX_RATE_PER_SECOND * 60 or len(str(number).rstrip("0")) > 2:
        raise LabelValueError(f"expected a rate such as 10r/s or 600r/m, with at most two significant digits "
                              f"(15r/s, 1200r/m) and at most {MAX_RATE_PER_SECOND}r/s, got {shown(value)}")
    return per_minute


def parse_burst(value: str) -> int:
    return _whole(value, 0, MAX_BURST, "the requests allowed beyond the rate")


def parse_connections(value: str) -> int:
    return _whole(value, 1, MAX_CONNECTIONS, "the connections per client address")


def parse_body_size(value: str) -> int:
    """`512k`, `10m`, `1g` or bytes → bytes; 0 means no limit, as in nginx."""
    match = _SIZE.fullmatch(value)
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()] if match else -1
    if not 0 <= size <= MAX_BODY_BYTES:
        raise LabelValueError(f"expected a size such as 512k, 10m or 1g (at most 64g; 0: no limit), got {shown(value)}")
    return size


def parse_cidrs(value: str) -> tuple[str, ...]:
    """Comma-separated addresses or networks (IPv4 or IPv6) → their normal form, sorted."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or len(parts) > MAX_CIDRS:
        raise LabelValueError(f"expected 1-{MAX_CIDRS} comma-separated addresses or networks (CIDR), "
                              f"got {shown(value)}")
    out = set()
    for part in parts:
        try:
            out.add(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise LabelValueError(f"expected an address or network such as 10.0.0.0/8, got {shown(part)}") from None
    return tuple(str(n) for n in sorted(out, key=lambda n: (n.version, n)))


def parse_weight(value: str) -> int:
    return _whole(value, 1, MAX_WEIGHT, "the service's weight in its shared pool")


def parse_max_fails(value: str) -> int:
    return _whole(value, 0, MAX_FAILS, "failed attempts before a task is skipped (0: never)")


def parse_redirect_code(value: str) -> int:
    if value not in ("301", "302", "307", "308"):
        raise LabelValueError(f"expected 301, 302, 307 or 308, got {shown(value)}")
    return int(value)


def _duration_ms(value: str, high_seconds: int, low_ms: int = 1) -> int:
    match = _DURATION.fullmatch(value)
    ms = int(match.group(1)) * _DURATION_MS[match.group(2)] if match else -1
    if not low_ms <= ms <= high_seconds * 1000:
        raise LabelValueError(f"expected a duration such as 500ms, 30s or 2m (at most {high_seconds}s), "
                              f"got {shown(value)}")
    return ms


def parse_connect_timeout(value: str) -> int:
    """Milliseconds."""
    return _duration_ms(value, MAX_CONNECT_SECONDS)


def parse_timeout(value: str) -> int:
    """Milliseconds."""
    return _duration_ms(value, MAX_TIMEOUT_SECONDS)


def parse_fail_timeout(value: str) -> int:
    """Seconds, whole: what nginx's `fail_timeout` keeps (it rounds to seconds)."""
    return _duration_ms(value, MAX_FAIL_TIMEOUT_SECONDS, low_ms=1000) // 1000


def parse_canary(value: str) -> Canary:
    """`header:X-Canary=on` or `cookie:canary=on`. The name must start with `X-Canary` (a header) or
    `canary` (a cookie): a canary takes only requests that opted into a canary, never a class of
    ordinary ones (`X-Requested-With=XMLHttpRequest` would take every AJAX call of a shared host)."""
    match = _CANARY.fullmatch(value)
    if match is None:
        raise LabelValueError(f"expected header:X-Canary-NAME=VALUE or cookie:canary_NAME=VALUE (letters, digits, "
                              f"'._~-'), got {shown(value)}")
    kind, name, wanted = match.groups()
    if kind == "header" and not (name.lower().startswith("x-canary") and "_" not in name):
        raise LabelValueError(f"a canary header's name starts with X-Canary (so only requests that opted in are "
                              f"taken), got {shown(name)}")
    if kind == "cookie" and not (name.lower().startswith("canary") and "-" not in name):
        raise LabelValueError(f"a canary cookie's name starts with canary and has letters, digits and '_', "
                              f"got {shown(name)}")
    return Canary("header" if kind == "header" else "cookie", name, wanted)


def parse_header_value(name: str, value: str) -> tuple[str, str]:
    """One response header to add: (name, value), the name as written, the value printable ASCII."""
    if not HEADER_NAME.fullmatch(name):
        raise LabelValueError(f"expected a header name of letters, digits and '-', got {shown(name)}")
    if name.lower() in RESERVED_HEADERS:
        raise LabelValueError(f"header {name} is set by swarmgate or frames the response; it cannot be added "
                              "by a label (HSTS: swarmgate.hsts)")
    if len(value) > MAX_HEADER_VALUE or not value.strip() or not _HEADER_VALUE.fullmatch(value):
        raise LabelValueError(f"expected a header value of printable ASCII without '\"', '\\' and '$' (at most "
                              f"{MAX_HEADER_VALUE}), got {shown(value)}")
    return name, value.strip()


# nginx reads a quoted argument in one 4 KiB buffer: a page's escaped text must stay well inside it.
MAX_PAGE_BYTES = 3584
_PAGE_TEXT = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*")


def nginx_quoted(text: str) -> str:
    """`text` as the inside of an nginx double-quoted string: `\\` and `"` escaped, line breaks and
    tabs as nginx's own `\\n`, `\\r`, `\\t`, and `$` (which would name a variable) as the HTML entity
    `&#36;` (the text is an HTML page)."""
    return (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            .replace("\t", "\\t").replace("$", "&#36;"))


def page_problem(data: bytes) -> str | None:
    """Why a Swarm config's data cannot be an error page, or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    if not _PAGE_TEXT.fullmatch(text):
        return "holds control characters"
    size = len(nginx_quoted(text).encode())
    if not text.strip() or size > MAX_PAGE_BYTES:
        return f"must hold 1-{MAX_PAGE_BYTES} bytes once escaped (it has {size})"
    return None

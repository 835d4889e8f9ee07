"""Typed values of the HTTPS labels: how a host is sent to HTTPS, how the proxy speaks TLS to the
tasks, and the HSTS header a host's HTTPS responses carry (pure).

Interlock's `ssl_only`, `ssl_backend` and `ssl_backend_tls_verify`, and swarmgate's own
`swarmgate.ssl_backend_ca` and `swarmgate.hsts*` labels. Like every label value, each is parsed into
numbers, booleans and Swarm names before anything reaches nginx.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from swarmgate.models.routing.label_values import LabelValueError, shown

# HSTS max-age: browsers cap it themselves; a value beyond ten years is a typo rather than a policy,
# and stays far inside the 31 bits every HTTP client parses.
MAX_HSTS_SECONDS = 10 * 365 * 86400
_HSTS_AGE = re.compile(r"(\d{1,10})(d|h|m|s)?")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1, None: 1}


@dataclass(frozen=True)
class BackendTLS:
    """The proxy speaks TLS to the pool's tasks. `ca`: the Swarm secret of the CA bundle their
    certificates are verified against (`required`); None: not verified (`none`, Interlock's default)."""

    ca: str | None = None


@dataclass(frozen=True)
class HSTS:
    """The Strict-Transport-Security a host's HTTPS responses carry, as typed parts."""

    max_age: int
    subdomains: bool = False
    preload: bool = False

    @property
    def header(self) -> str:
        """The header's value, made of a number and two fixed words only."""
        return (f"max-age={int(self.max_age)}" + ("; includeSubDomains" if self.subdomains else "")
                + ("; preload" if self.preload else ""))


def parse_tls_verify(value: str) -> Literal["none", "required"]:
    """Interlock's `ssl_backend_tls_verify`: `none` (its default) or `required`."""
    if value == "none":
        return "none"
    if value == "required":
        return "required"
    raise LabelValueError(f"expected none or required, got {shown(value)}")


def parse_hsts_max_age(value: str) -> int:
    """Seconds, written as a number of seconds or with one unit: `31536000`, `365d`, `12h`, `30m`."""
    match = _HSTS_AGE.fullmatch(value)
    seconds = int(match.group(1)) * _UNIT[match.group(2)] if match else -1
    if not 0 <= seconds <= MAX_HSTS_SECONDS:
        raise LabelValueError(f"expected a max-age such as 365d, 12h or 31536000 (seconds), at most "
                              f"{MAX_HSTS_SECONDS // 86400}d, got {shown(value)}")
    return seconds

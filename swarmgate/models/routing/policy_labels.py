"""swarmgate's per-route policy labels → typed policies of one service (pure).

Three scopes, by where nginx applies them:

* `RoutePolicy`, per location (host and path): basic auth, client address lists, rate and connection
  limits, body size, response headers, error pages, timeouts. Services pooled at one location
  share one location, so the oldest of them decides the whole policy (`route_merge`).
* `MemberPolicy`, per service inside a pool: its weight, its canary match, and its tasks'
  `max_fails`/`fail_timeout` (nginx's per-`server` parameters).
* `redirect_code`, per redirected host (`com.docker.lb.redirects`), 302 by default as in Interlock.

Response headers are one label each, `swarmgate.response_header.<Name>=<value>`, so the name comes
from the label's key (a strict token) and the value from its value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from swarmgate.models.routing.label_values import LabelValueError, parse_swarm_name, shown
from swarmgate.models.routing.policy_values import (
    ERROR_CODES,
    MAX_RESPONSE_HEADERS,
    Canary,
    RateLimit,
    parse_body_size,
    parse_burst,
    parse_canary,
    parse_cidrs,
    parse_connect_timeout,
    parse_connections,
    parse_fail_timeout,
    parse_header_value,
    parse_max_fails,
    parse_rate,
    parse_redirect_code,
    parse_timeout,
    parse_weight,
)

PolicyLabelName = Literal[
    "allow", "auth_secret", "canary", "conn_limit", "connect_timeout", "deny", "error_page_502",
    "error_page_503", "error_page_504", "fail_timeout", "max_body_size", "max_fails", "rate_burst",
    "rate_limit", "read_timeout", "redirect_code", "response_header", "send_timeout", "weight",
]
POLICY_LABELS: tuple[PolicyLabelName, ...] = get_args(PolicyLabelName)
HEADER_LABEL: Literal["response_header"] = "response_header"  # a prefix: swarmgate.response_header.<Name>

POLICY_PARSERS: dict[str, Callable[[str], object]] = {
    "allow": parse_cidrs,
    "auth_secret": parse_swarm_name,
    "canary": parse_canary,
    "conn_limit": parse_connections,
    "connect_timeout": parse_connect_timeout,
    "deny": parse_cidrs,
    "error_page_502": parse_swarm_name,
    "error_page_503": parse_swarm_name,
    "error_page_504": parse_swarm_name,
    "fail_timeout": parse_fail_timeout,
    "max_body_size": parse_body_size,
    "max_fails": parse_max_fails,
    "rate_burst": parse_burst,
    "rate_limit": parse_rate,
    "read_timeout": parse_timeout,
    "redirect_code": parse_redirect_code,
    "send_timeout": parse_timeout,
    "weight": parse_weight,
}


@dataclass(frozen=True)
class ErrorPage:
    """The page nginx answers a 502, 503 or 504 with: the Swarm config `config` names, and once the
    route table has looked it up, its text (`body`) and a short digest naming it in nginx."""

    code: int
    config: str
    body: str = ""
    digest: str = ""


@dataclass(frozen=True)
class RoutePolicy:
    """What one location enforces; every field typed (timeouts in milliseconds, sizes in bytes)."""

    auth_secret: str | None = None  # a Swarm secret holding an htpasswd file
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    rate: RateLimit | None = None
    connections: int | None = None
    max_body: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    error_pages: tuple[ErrorPage, ...] = ()
    connect_timeout_ms: int | None = None
    read_timeout_ms: int | None = None
    send_timeout_ms: int | None = None


@dataclass(frozen=True)
class MemberPolicy:
    """How one service takes part in a pool it may share: weight 1-100 (100 when unset), an
    optional canary match, and what nginx does with its failing tasks."""

    weight: int | None = None
    canary: Canary | None = None
    max_fails: int | None = None
    fail_timeout: int | None = None  # seconds


@dataclass(frozen=True)
class ServicePolicies:
    route: RoutePolicy = field(default_factory=RoutePolicy)
    member: MemberPolicy = field(default_factory=MemberPolicy)
    redirect_code: int = 302


NO_POLICIES = ServicePolicies()


class PolicyLabelError(LabelValueError):
    """A policy label is invalid in combination with the others; `kind` names the label."""

    def __init__(self, kind: PolicyLabelName, message: str) -> None:
        super().__init__(message)
        self.kind: PolicyLabelName = kind


def parse_headers(headers: Mapping[str, str], prefix: str) -> tuple[tuple[str, str], ...]:
    """`{<Name>: value}` of the response-header labels → sorted (name, value) pairs."""
    if len(headers) > MAX_RESPONSE_HEADERS:
        raise PolicyLabelError(HEADER_LABEL, f"at most {MAX_RESPONSE_HEADERS} response headers, got {len(headers)}")
    out: dict[str, tuple[str, str]] = {}
    for name, value in sorted(headers.items()):
        try:
            pair = parse_header_value(name, value)
        except LabelValueError as exc:
            raise PolicyLabelError(HEADER_LABEL, f"label {prefix}{shown(name)[1:-1]}: {exc}") from None
        if name.lower() in out:
            raise PolicyLabelError(HEADER_LABEL, f"header {name} is given twice (names are case-insensitive)")
        out[name.lower()] = pair
    return tuple(out[key] for key in sorted(out))


def build_policies(values: Mapping[str, object], headers: tuple[tuple[str, str], ...], prefix: str, *,
                   redirects: bool = False) -> ServicePolicies:
    """The typed policies from the parsed policy label values; PolicyLabelError on a label that
    needs another one (a burst without a rate; a redirect code without `redirects`)."""
    if "redirect_code" in values and not redirects:
        raise PolicyLabelError("redirect_code", f"label {prefix}redirect_code needs com.docker.lb.redirects "
                                                "(it is the status of those redirects)")
    if "rate_burst" in values and "rate_limit" not in values:
        raise PolicyLabelError("rate_burst", f"label {prefix}rate_burst needs {prefix}rate_limit (such as 10r/s)")
    if "canary" in values and "weight" in values:
        raise PolicyLabelError("weight", f"label {prefix}weight: a canary ({prefix}canary) takes only the requests "
                                         "that match it, so it has no weight in the pool")

    if not values and not headers:  # most services set no policy label: the defaults, shared
        return NO_POLICIES
    pages = tuple(ErrorPage(code, _str(values, f"error_page_{code}") or "") for code in ERROR_CODES
                  if f"error_page_{code}" in values)
    per_minute = _int(values, "rate_limit")
    canary = values.get("canary")
    route = RoutePolicy(
        auth_secret=_str(values, "auth_secret"), allow=_cidrs(values, "allow"), deny=_cidrs(values, "deny"),
        rate=None if per_minute is None else RateLimit(per_minute, _int(values, "rate_burst") or 0),
        connections=_int(values, "conn_limit"), max_body=_int(values, "max_body_size"), headers=headers,
        error_pages=pages, connect_timeout_ms=_int(values, "connect_timeout"),
        read_timeout_ms=_int(values, "read_timeout"), send_timeout_ms=_int(values, "send_timeout"),
    )
    member = MemberPolicy(weight=_int(values, "weight"), canary=canary if isinstance(canary, Canary) else None,
                          max_fails=_int(values, "max_fails"), fail_timeout=_int(values, "fail_timeout"))
    return ServicePolicies(route=route, member=member, redirect_code=_int(values, "redirect_code") or 302)


def _int(values: Mapping[str, object], name: str) -> int | None:
    value = values.get(name)
    return value if isinstance(value, int) else None


def _str(values: Mapping[str, object], name: str) -> str | None:
    value = values.get(name)
    return value if isinstance(value, str) else None


def _cidrs(values: Mapping[str, object], name: str) -> tuple[str, ...]:
    value = values.get(name)
    return tuple(str(v) for v in value) if isinstance(value, tuple) else ()

"""Parsers for the value types found in `com.docker.lb.*` labels (pure).

Label values are untrusted: whoever can create a service can write any string into them. Each parser
accepts only a strict, documented form and raises `LabelValueError` with what is allowed otherwise,
so nothing reaches the nginx config that was not first turned into a typed value of a safe alphabet.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit


class LabelValueError(ValueError):
    """A label value is not of the allowed form; the message says what is allowed."""


def shown(value: str) -> str:
    """A label value as it may appear in a reason: escaped (repr) and not unbounded."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Every pattern is used with `fullmatch`: `$` also matches before a trailing newline, which let
# `demo\n.local` through as a host name (and a rendered config with a line break in a server name).
_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_PATH = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_SWARM_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9])?")
# RFC 6265 cookie-name = token (RFC 2616): any CHAR except CTLs and separators.
_COOKIE_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# nginx can address a cookie only through `$cookie_NAME`, and variable names are [A-Za-z0-9_].
_NGINX_COOKIE = re.compile(r"[A-Za-z0-9_]+")
# nginx refuses any token longer than its 4 KiB config buffer ("too long parameter"), which would
# reject the whole config; no cookie name a browser sends comes near this.
MAX_COOKIE_NAME = 256
# One service's label should not be able to make the config (and every reload) arbitrarily large.
MAX_HOSTS = 1000
MAX_PATHS = 100
MAX_REDIRECTS = 100
# RFC 2606: `.invalid` is never a real host; swarmgate's control server in every proxy uses it.
RESERVED_TLD = "invalid"
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_bool(value: str) -> bool:
    """Go's strconv.ParseBool, which Interlock used for its boolean labels."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise LabelValueError(f"expected true or false, got {shown(value)}")


def parse_port(value: str) -> int:
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 65535:
        raise LabelValueError(f"expected an integer 1-65535, got {shown(value)}")
    return int(value)


def parse_hostname(value: str) -> str:
    """An RFC 1123 host name, lower-cased; a leading `*.` wildcard is allowed (nginx supports it)."""
    host = value.strip().lower()
    labels = host.split(".")
    body = labels[1:] if labels[0] == "*" and len(labels) > 1 else labels
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in body):
        raise LabelValueError(
            f"expected host names (RFC 1123: letters, digits, '-' and '.'), got {shown(value)}"
        )
    if labels[-1] == RESERVED_TLD:
        # The proxies' control server is reached by a `.invalid` name; no real host ends so.
        raise LabelValueError(f"host names under .{RESERVED_TLD} are reserved for swarmgate, got {shown(value)}")
    return host


def parse_hostnames(value: str) -> tuple[str, ...]:
    """A comma-separated list of host names, deduplicated and sorted."""
    parts = [p for p in (part.strip() for part in value.split(",")) if p]
    if not parts:
        raise LabelValueError(f"expected a comma-separated list of host names, got {shown(value)}")
    _at_most(MAX_HOSTS, parts, "host names", value)
    return tuple(sorted({parse_hostname(p) for p in parts}))


def _at_most(limit: int, parts: list[str], what: str, value: str) -> None:
    if len(parts) > limit:
        raise LabelValueError(f"expected at most {limit} {what}, got {len(parts)} in {shown(value)}")


def parse_path(value: str) -> str:
    """An absolute URL path of unreserved characters (`/app`, `/api/v1`); `/` is the root.

    A trailing slash is dropped: `/app/` and `/app` name the same context root.
    """
    path = value.strip()
    if path == "/":
        return "/"
    stripped = path.rstrip("/") if len(path) > 1 else path
    segments = stripped.split("/")[1:]
    if (
        len(stripped) > 255
        or not _PATH.fullmatch(stripped)
        or any(segment in (".", "..") for segment in segments)
    ):
        raise LabelValueError(
            f"expected an absolute path of letters, digits and '._~-' (like /app), got {shown(value)}"
        )
    return stripped


def parse_paths(value: str) -> tuple[str, ...]:
    parts = [p for p in (part.strip() for part in value.split(",")) if p]
    if not parts:
        raise LabelValueError(f"expected a comma-separated list of paths, got {shown(value)}")
    _at_most(MAX_PATHS, parts, "paths", value)
    return tuple(sorted({parse_path(p) for p in parts}))


def parse_swarm_name(value: str) -> str:
    """A Swarm object name (secret, network, service cluster): letters, digits, '_', '.', '-'."""
    if not _SWARM_NAME.fullmatch(value):
        raise LabelValueError(
            f"expected a name of letters, digits, '_', '.', '-' (at most 64), got {shown(value)}"
        )
    return value


def parse_cookie_name(value: str) -> str:
    if len(value) > MAX_COOKIE_NAME:
        raise LabelValueError(f"expected a cookie name of at most {MAX_COOKIE_NAME} characters, got {shown(value)}")
    if not _COOKIE_TOKEN.fullmatch(value):
        raise LabelValueError(f"expected a cookie name (an RFC 6265 token), got {shown(value)}")
    if not _NGINX_COOKIE.fullmatch(value):
        raise LabelValueError(
            f"nginx can only address cookies named with letters, digits and '_', got {shown(value)}"
        )
    return value


def parse_url(value: str) -> tuple[str, str, int | None, str]:
    """`http(s)://host[:port][/path]` → (scheme, host, port, path); no query, fragment or user info."""
    raw = value.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise LabelValueError(f"expected a URL like http://example.com/path, got {shown(value)}") from None
    if (
        parts.scheme not in ("http", "https")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or "?" in raw
        or "#" in raw
        or parts.hostname is None
    ):
        raise LabelValueError(f"expected a URL like http://example.com/path, got {shown(value)}")
    host = parse_hostname(parts.hostname)
    if host.startswith("*"):
        raise LabelValueError(f"a redirect cannot use a wildcard host, got {shown(value)}")
    path = parse_path(parts.path) if parts.path not in ("", "/") else ""
    return parts.scheme, host, port, path


def parse_redirects(value: str) -> tuple[tuple[str, str], ...]:
    """`src,target;src,target` → ((source host, target URL), ...), sorted.

    The source names the host whose requests are redirected; the target is rebuilt from its parsed
    parts, so what reaches nginx is exactly scheme, host, port and path.
    """
    out: dict[str, str] = {}
    _at_most(MAX_REDIRECTS, [p for p in value.split(";") if p.strip()], "redirects", value)
    for pair in (p.strip() for p in value.split(";")):
        if not pair:
            continue
        pieces = [p.strip() for p in pair.split(",")]
        if len(pieces) != 2:
            raise LabelValueError(f"expected 'source,target;source,target', got {shown(value)}")
        _, source_host, _, _ = parse_url(pieces[0])
        scheme, host, port, path = parse_url(pieces[1])
        target = f"{scheme}://{host}{f':{port}' if port is not None else ''}{path}"
        if source_host in out and out[source_host] != target:
            raise LabelValueError(f"host {source_host} is redirected twice in {shown(value)}")
        out[source_host] = target
    if not out:
        raise LabelValueError(f"expected 'source,target;source,target', got {shown(value)}")
    return tuple(sorted(out.items()))

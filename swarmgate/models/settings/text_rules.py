"""What the config's free-text values may look like, checked before they reach Swarm or nginx (pure).

Each rule is the grammar of the thing the value becomes: an image reference (Docker's reference
grammar), a Swarm object name, a placement constraint, a stop signal, an address the proxies can
reach the operator at. A value Swarm or nginx would refuse later is refused here, in one line,
before anything in the Swarm changes.
"""

from __future__ import annotations

import ipaddress
import re
import signal
from collections.abc import Mapping, Sequence
from typing import Any

# C0 controls (tab included: no value here needs one), DEL and C1 controls. A NUL or a newline in a
# value could end a directive in nginx, a line in the agent's environment, or a string in Go.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_character_at(data: Any, path: tuple[str | int, ...] = ()) -> tuple[tuple[str | int, ...], str] | None:
    """The key path and the character of the first control character in any string of `data`."""
    if isinstance(data, str):
        found = _CONTROL.search(data)
        return (path, found.group()) if found else None
    if isinstance(data, Mapping):
        for key, value in data.items():
            hit = control_character_at(str(key), (*path, str(key))) or control_character_at(value, (*path, str(key)))
            if hit:
                return hit
    elif isinstance(data, Sequence) and not isinstance(data, bytes | bytearray):
        for index, value in enumerate(data):
            hit = control_character_at(value, (*path, index))
            if hit:
                return hit
    return None


# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest].
_DOMAIN_PART = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?$")
_NAME_MAX = 255


def image_reference(value: str) -> str:
    name = value.split("@", 1)[0]
    if not _REFERENCE.match(value) or len(name) > _NAME_MAX:
        raise ValueError(f"expected an image reference such as 'nginx:alpine' or 'registry:5000/team/nginx:1.25', "
                         f"got {value!r}")
    # Without a domain, a first path part with ':' would be a port: 'nginx:1:2' is not a reference.
    return value


# Swarm's rule for service names (and the config names derived from them, `<service>.<kind>.<digest>`,
# which must stay within Swarm's 64 characters).
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9](?:[-_]*[A-Za-z0-9]+)*$")
SERVICE_NAME_MAX = 40


def swarm_service_name(value: str) -> str:
    if not _SERVICE_NAME.match(value) or len(value) > SERVICE_NAME_MAX:
        raise ValueError(f"expected a Swarm service name of letters, digits, '-' and '_' (max {SERVICE_NAME_MAX}, "
                         f"starting and ending with a letter or digit), got {value!r}")
    return value


_CONSTRAINT = re.compile(r"^\s*[A-Za-z0-9_.-]+(?:\.[A-Za-z0-9_.-]+)*\s*(?:==|!=)\s*[^\s=!][^=!]*$")


def placement_constraint(value: str) -> str:
    if not _CONSTRAINT.match(value):
        raise ValueError(f"expected a placement constraint such as 'node.labels.nodetype==loadbalancer', got {value!r}")
    return value


_PREFERENCE = re.compile(r"^spread=[A-Za-z0-9_.-]+$")


def placement_preference(value: str) -> str:
    if not _PREFERENCE.match(value):
        raise ValueError(f"expected a placement preference such as 'spread=node.labels.zone', got {value!r}")
    return value


_SIGNALS = {s.name for s in signal.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}


def stop_signal(value: str) -> str:
    """What Docker accepts: a signal name (with or without SIG), SIGRTMIN+n, or a number 1-64."""
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    realtime = re.fullmatch(r"SIGRTM(?:IN\+|AX-)(\d{1,2})", name)
    if value.isdigit() and 1 <= int(value) <= 64:
        return value
    if name in _SIGNALS or (realtime and int(realtime.group(1)) <= 30):
        return value
    raise ValueError(f"expected a signal such as 'SIGQUIT' or 'SIGTERM', got {value!r}")


_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*$")
_ENDPOINT = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:\[\]@?#]+):(?P<port>\d{1,5})/?$")


def endpoint_url(value: str) -> str:
    """`host:port` or `http(s)://host:port`: where the proxies reach the operator."""
    expected = f"expected 'host:port' or 'http://host:port' (where the proxies reach the operator), got {value!r}"
    match = _ENDPOINT.match(value)
    if match is None or not 1 <= int(match.group("port")) <= 65535:
        raise ValueError(expected)
    host = match.group("host")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(expected) from None
    elif not _HOST.match(host):
        raise ValueError(expected)
    return value


_DOCKER_URL = re.compile(r"^(?:unix://(?:/[^\s]*)?|npipe://[^\s]+|(?:tcp|http|https|ssh)://[^\s/]+(?:/[^\s]*)?)$")


def docker_engine_url(value: str) -> str:
    if not _DOCKER_URL.match(value):
        raise ValueError(f"expected 'unix:///var/run/docker.sock' or 'tcp://host:2376', got {value!r}")
    return value


_ABS_PATH = re.compile(r"^/[A-Za-z0-9._+@=,/-]*$")


def absolute_path(value: str) -> str:
    if not _ABS_PATH.match(value) or "/../" in value + "/":
        raise ValueError(f"expected an absolute path of letters, digits and '._-/', got {value!r}")
    return value


_CLUSTER = re.compile(r"^[A-Za-z0-9._-]{0,128}$")


def cluster_name(value: str) -> str:
    """A service cluster name: it is written into the rendered config's header, so it stays plain."""
    if not _CLUSTER.match(value):
        raise ValueError(f"expected a service cluster name of letters, digits, '.', '_' and '-', got {value!r}")
    return value


def control_source(value: str) -> str:
    """An address or network allowed to reach the proxies' control server besides the Swarm's nodes
    (an operator run as a plain process outside the Swarm): normalized, e.g. `198.18.0.1/32`."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"expected an IP address or network such as '10.0.0.5' or '10.0.0.0/24', "
                         f"got {value!r}") from None


_ACME_DIRECTORY = re.compile(r"^https://[^\s/?#@]+(?:/[^\s#]*)?$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+$")


def acme_directory_url(value: str) -> str:
    """An ACME server's directory URL (RFC 8555 §7.1.1): HTTPS only, as the protocol requires."""
    if not _ACME_DIRECTORY.match(value) or len(value) > 2048:
        raise ValueError(f"expected the ACME directory's https URL, such as "
                         f"'https://acme-v02.api.letsencrypt.org/directory', got {value!r}")
    return value


# A dashboard's address is shown on the status page: no credentials before the host, nothing that
# could leave an HTML attribute.
_DASHBOARD_URL = re.compile(r"^https?://[^\s/?#@\"'<>]+(?:/[^\s#\"'<>]*)?$")


def dashboard_url(value: str) -> str:
    """A Grafana dashboard's http(s) URL, linked from the status page (so it may hold no user:password@)."""
    if not _DASHBOARD_URL.match(value) or len(value) > 2048:
        raise ValueError(f"expected a dashboard's http(s) URL without credentials, such as "
                         f"'https://grafana.example.com/d/swarmgate/swarmgate', got {value!r}")
    return value


def email_address(value: str) -> str:
    """The contact address given to the ACME account (a plain address, no display name)."""
    if not _EMAIL.match(value) or len(value) > 254:
        raise ValueError(f"expected an e-mail address such as 'ops@example.com', got {value!r}")
    return value

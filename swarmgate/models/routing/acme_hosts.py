"""Which hosts may ask for an ACME certificate, and what the route table takes from issued ones (pure).

A service labelled `swarmgate.acme=true` gets one certificate per host of `com.docker.lb.hosts`,
proved over HTTP-01. The route table does not read certificates: the planning layer says, per host,
which owned secret holds the certificate to serve (`AcmeRouting.certs`), and the table names that
secret as both certificate and key (the secret holds the chain, then its key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from swarmgate.models.routing.labels import OWN_PREFIX, PREFIX, ServiceRouting
from swarmgate.models.settings.config import ACME_MAX_HOSTS_PER_SERVICE

# Where the CA asks (RFC 8555 §8.3), and what a token may be: base64url, which the regex location of
# the proxies' port-80 servers also accepts, so nothing else under the prefix is answered.
CHALLENGE_PREFIX: Final = "/.well-known/acme-challenge/"
TOKEN_PATTERN: Final = "[A-Za-z0-9_-]+"
# RFC 7638's thumbprint: base64url of a SHA-256, 43 characters.
THUMBPRINT: Final = re.compile(r"[A-Za-z0-9_-]{43}")
# A DNS name HTTP-01 can prove: letters, digits and hyphens in dot-separated labels, no wildcard.
_LABEL: Final = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_ISSUABLE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_MAX_HOST: Final = 253


def issuable(host: str) -> bool:
    """Whether an ACME CA can issue for `host` over HTTP-01: a lower-case DNS name of two labels or
    more, no wildcard (those need DNS-01), not an IPv4 address, nothing under `.invalid`."""
    if len(host) > _MAX_HOST or not _ISSUABLE.fullmatch(host) or host.endswith(".invalid"):
        return False
    return not all(part.isdigit() for part in host.split("."))


@dataclass(frozen=True)
class AcmeRouting:
    """What the route table needs to know about ACME: whether `ACMEDirectory` is configured, per
    host the Swarm secret of the certificate to serve (a host with none yet is served over HTTP only),
    and how many hosts one service may ask certificates for (`ACMEMaxHostsPerService`)."""

    configured: bool = False
    certs: Mapping[str, str] = field(default_factory=dict)
    max_hosts: int = ACME_MAX_HOSTS_PER_SERVICE


NO_ACME: Final = AcmeRouting()


def acme_problem(r: ServiceRouting, acme: AcmeRouting) -> str | None:
    """Why a service labelled `swarmgate.acme=true` cannot have certificates, or None."""
    if not r.acme:
        return None
    if not acme.configured:
        return f"label {OWN_PREFIX}acme=true, but no ACMEDirectory configured: nobody would issue its certificates"
    refused = [h for h in r.hosts if not issuable(h)]
    if refused:
        return (f"label {OWN_PREFIX}acme=true: no certificate can be proved over HTTP-01 for "
                f"{', '.join(refused[:3])}{' ...' if len(refused) > 3 else ''} (a lower-case DNS name is needed: "
                f"no wildcard, IP address or .invalid name; remove it from {PREFIX}hosts or the label)")
    if len(r.hosts) > acme.max_hosts:
        # Each host is one order at the CA, on the account every service shares: one service's labels
        # must not spend its rate limit for everyone. Set aside whole, so no host is picked arbitrarily.
        return (f"label {OWN_PREFIX}acme=true on {len(r.hosts)} hosts, more than ACMEMaxHostsPerService "
                f"({acme.max_hosts}): no certificate is ordered for any of them (split the service, or "
                f"raise the limit)")
    return None

"""The CA bundle a TLS backend is verified against (`swarmgate.ssl_backend_ca`): may the proxy mount
its secret, and could nginx load it (pure).

It is a Swarm secret mounted into the proxy like a certificate (`tls_secrets`), so it is held to the
same rules, with the same kinds of reason: a secret that does not exist (`missing_secret`), that
swarmgate owns (`forbidden_secret`), or that a proxy's nginx could not load as a CA bundle
(`unusable_secret`) sets only that service aside. nginx reads the bundle when it loads the config
(`proxy_ssl_trusted_certificate` with `proxy_ssl_verify on`), and its message names the file:

    SSL_CTX_load_verify_locations("/run/secrets/x") failed (SSL: ... no certificate or crl found)

The file is Swarm's mount `/run/secrets/NAME` (plain delivery) or the certificate courier's copy
`/run/swarmgate-certs/<ID>.pem` (hitless delivery), whose path names the secret's ID itself.

A file that is not there (a proxy rolling to mount it) fails with a `system library` error: that
says nothing of the secret's content, so it never marks a secret unusable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from typing import Any

from swarmgate.models.routing.labels import OWN_PREFIX, ReasonKind, ServiceRouting
from swarmgate.models.routing.tls_secrets import CERTS_DIR, SECRETS_DIR, mounted_secret_ids, named_secret_problem
from swarmgate.models.swarm.objects import SwarmSecret
from swarmgate.models.swarm.ownership import CHANNEL_SECRET_NAME

_UNUSABLE_CA = re.compile(
    rf'SSL_CTX_load_verify_locations\("(?:{re.escape(SECRETS_DIR)}(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)'
    rf'|{re.escape(CERTS_DIR)}/(?P<id>[A-Za-z0-9]+)\.pem)"\) failed'
    r"(?! \(SSL: error:[0-9A-Fa-f]+:system library)"
)


def ca_problem(routing: ServiceRouting, secrets: Mapping[str, SwarmSecret],
               unusable: Set[str], undelivered: Set[str] = frozenset()) -> tuple[ReasonKind, str] | None:
    """(kind, reason) when the service's CA bundle secret may not reach the proxy's nginx, by the
    same rules as a certificate (`tls_secrets.named_secret_problem`)."""
    if routing.ssl_backend_ca is None:
        return None
    return named_secret_problem(f"label {OWN_PREFIX}ssl_backend_ca", routing.ssl_backend_ca, secrets, unusable,
                                undelivered, what="a CA bundle",
                                fix="a PEM CA bundle; create a secret with PEM certificates and point the label at it")


def unusable_ca_names(message: str) -> frozenset[str]:
    """The names of the mounted secrets (`/run/secrets/NAME`) a failed `nginx -t` could not load as a
    CA bundle (see the docstring)."""
    return frozenset(name for match in _UNUSABLE_CA.finditer(message) if (name := match.group("name")))


def unusable_ca_ids(message: str, proxy_spec: Mapping[str, Any]) -> frozenset[str]:
    """The IDs of the secrets a failed `nginx -t` could not load as a CA bundle: a courier's file
    names its ID; a mount is looked up in the proxy's spec (a name it does not mount is no one's)."""
    mounted = mounted_secret_ids(proxy_spec)
    by_name = {mounted[name] for name in unusable_ca_names(message) if name in mounted and name != CHANNEL_SECRET_NAME}
    return frozenset(by_name | {i for match in _UNUSABLE_CA.finditer(message) if (i := match.group("id"))})

"""The Swarm secrets a service's TLS labels name: may the proxy mount them, and can nginx load them (pure).

With plain delivery every secret a route table names is mounted into the proxy service at
`/run/secrets/NAME`; with hitless delivery the certificate courier (operator/planning/courier.py)
mounts them and copies each to `CERTS_DIR/<ID>.pem`, which the proxy reads. Either way Swarm
refuses a whole service spec that names a secret that does not exist, so one service naming a missing
secret would freeze the proxy's spec, and with it every other service's route changes. A TLS label
may also name a secret that is not a certificate at all, such as the delivery channel's key. So
a service is set aside, before anything reaches the proxy's spec, when its `ssl_cert` or `ssl_key`

* names no secret in the snapshot (`missing_secret`);
* names a secret swarmgate owns: the channel key (`swarmgate-channel`), or anything labelled as swarmgate's
  (`forbidden_secret`);
* names a secret whose ID a proxy has reported nginx cannot load (`unusable_secret`);
* names a secret whose courier file a hitless proxy waited for in vain (`undelivered_secret`): the
  agent rejects such a config after its wait, so one secret never stalls the others for longer.

Only nginx, inside a proxy where the secret is mounted, can read a secret's content; managers
cannot. `unusable_secret_names` and `unusable_secret_ids` turn the message of a proxy's failed
`nginx -t` into the secret IDs to pass to `build_route_table`. A secret's content never changes
under one ID, so an ID once unusable stays unusable; a new secret (even with the old name) gets a
new ID and is tried afresh.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Set
from typing import Any

from swarmgate.models.routing.labels import PREFIX, ReasonKind, ServiceRouting
from swarmgate.models.swarm.objects import SwarmSecret
from swarmgate.models.swarm.ownership import CHANNEL_SECRET_NAME, is_owned

SECRETS_DIR = "/run/secrets/"
# Where a hitless proxy finds each TLS secret, as `<secret ID>.pem` (the certificate courier's volume).
# Not under the agent's directory (/var/lib/swarmgate): a pushed config may name that only once.
CERTS_DIR = "/run/swarmgate-certs"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_ID = r"[A-Za-z0-9]+"


def _file(n: int) -> str:
    """A TLS file nginx may name: a Swarm mount (group `nameN`) or a courier's copy (group `idN`)."""
    return rf'(?:{re.escape(SECRETS_DIR)}(?P<name{n}>{_NAME})|{re.escape(CERTS_DIR)}/(?P<id{n}>{_ID})\.pem)'


# nginx's messages that name a file it opened but could not use (ngx_event_openssl.c):
#   cannot load certificate "/run/secrets/x": PEM_read_bio_X509_AUX() failed (...)
#   cannot load certificate key "/run/secrets/x": PEM_read_bio_PrivateKey() failed (...)
#   SSL_CTX_use_certificate("/run/secrets/x") failed (... ee key too small)
#   SSL_CTX_use_PrivateKey("/run/secrets/x") failed (... key values mismatch)
# `BIO_new_file() failed` means the file could not be opened (not mounted yet, during a roll):
# that says nothing about the secret's content, so it never marks a secret unusable.
_UNUSABLE = re.compile(
    rf'cannot load certificate(?: key)? "{_file(1)}": (?!BIO_new_file\(\))'
    rf'|SSL_CTX_(?:use_certificate|use_PrivateKey|set0_chain)\("{_file(2)}"\) failed'
)
# The agent's rejection when the courier did not bring a file in time (planning/agent.sh).
# Its line names the file by the agent's own certs dir (`CERTS_DIR` in a proxy), so any directory goes.
_UNDELIVERED = re.compile(rf"^certificate file not delivered: /\S*/(?P<id>{_ID})\.pem$", re.MULTILINE)


def tls_file(secret: SwarmSecret, *, hitless: bool) -> str:
    """Where the proxy's nginx reads a TLS secret: the courier's copy (hitless), or Swarm's mount (plain)."""
    return f"{CERTS_DIR}/{secret.id}.pem" if hitless else f"{SECRETS_DIR}{secret.name}"


def is_forbidden(secret: SwarmSecret) -> bool:
    """A secret swarmgate owns: the channel key (by name, whoever made it) or one labelled as ours."""
    return (secret.name == CHANNEL_SECRET_NAME or is_owned(secret.labels)
            or any(key.startswith("swarmgate.") for key in secret.labels))


def named_secret_problem(
    where: str,
    name: str,
    secrets: Mapping[str, SwarmSecret],
    unusable: Set[str],
    undelivered: Set[str],
    *,
    what: str,
    fix: str,
) -> tuple[ReasonKind, str] | None:
    """(kind, reason) when the secret `name`, which the label `where` names as `what` (a certificate
    or key, a CA bundle), may not reach the proxy's nginx; `fix` says what a usable secret holds."""
    secret = secrets.get(name)
    if secret is None:
        return "missing_secret", (f"{where}: no Swarm secret named {name!r} (create it with "
                                  f"`docker secret create {name} FILE`, or fix the label)")
    if is_forbidden(secret):
        return "forbidden_secret", (f"{where}: Swarm secret {name!r} belongs to swarmgate itself and "
                                    f"cannot be used as {what}")
    if secret.id in unusable:
        return "unusable_secret", (f"{where}: nginx in the proxy cannot load Swarm secret {name!r} "
                                   f"(ID {secret.id[:12]}) as {fix}")
    if secret.id in undelivered:
        return "undelivered_secret", (f"{where}: Swarm secret {name!r} (ID {secret.id[:12]}) did not reach "
                                      "the proxy's certificate courier in time; check the service "
                                      "<ProxyServiceName>-certs, or create the secret again")
    return None


def secret_problem(
    routing: ServiceRouting,
    secrets: Mapping[str, SwarmSecret],
    unusable: Set[str],
    undelivered: Set[str] = frozenset(),
) -> tuple[ReasonKind, str] | None:
    """(kind, reason) when the service's ssl_cert or ssl_key may not be mounted into the proxy.

    `secrets` maps every secret name in the snapshot to its secret; `unusable` and `undelivered`
    hold secret IDs.
    """
    for label, name in (("ssl_cert", routing.ssl_cert), ("ssl_key", routing.ssl_key)):
        problem = None if name is None else named_secret_problem(
            f"label {PREFIX}{label}", name, secrets, unusable, undelivered, what="a certificate or key",
            fix="a PEM certificate or key; create a secret with a PEM certificate chain or key and point "
                "the label at it")
        if problem is not None:
            return problem
    return None


def unusable_secret_names(message: str) -> frozenset[str]:
    """The names of the Swarm secrets that nginx could not use, from the text of a failed `nginx -t`.

    Contract:

    * `message` is nginx's own error output as the proxy's agent reports it: one or more lines, with
      or without nginx's `YYYY/MM/DD HH:MM:SS [emerg] PID#TID: ` or `nginx: [emerg] ` prefix.
    * A name is returned for each file under `/run/secrets/` that nginx opened and could not use as
      a certificate (`cannot load certificate "..."`, `SSL_CTX_use_certificate("...") failed`, e.g.
      a key that is too weak), as a key (`cannot load certificate key "..."`), or as the key of its
      certificate (`SSL_CTX_use_PrivateKey("...") failed`, the key does not match: the key's
      secret is named).
    * A file that could not be opened (`BIO_new_file() failed`: not mounted, during a roll of the
      proxy) is not returned: that is no fault of the secret's content, and it resolves itself.
    * Every other message (syntax errors, ports, anything without a `/run/secrets/` path) gives an
      empty set. nginx stops at its first error, so one message names at most one secret today;
      with two bad secrets the second is named once the first service is set aside.
    """
    return frozenset(n for m in _UNUSABLE.finditer(message) if (n := m.group("name1") or m.group("name2")))


def unusable_certs_ids(message: str) -> frozenset[str]:
    """The secret IDs of the courier's files (`CERTS_DIR/<ID>.pem`) that nginx opened and could not
    use, by the rules of `unusable_secret_names`; the ID is in the path, so no spec is needed."""
    return frozenset(i for m in _UNUSABLE.finditer(message) if (i := m.group("id1") or m.group("id2")))


def undelivered_secret_ids(message: str) -> frozenset[str]:
    """The secret IDs whose courier file a proxy's agent waited for in vain (its rejection names them)."""
    return frozenset(m.group("id") for m in _UNDELIVERED.finditer(message))


def mounted_secret_ids(proxy_spec: Mapping[str, Any]) -> dict[str, str]:
    """Secret name → secret ID for each secret a proxy service's spec mounts at /run/secrets/NAME.

    The spec is the proxy service's `Spec` as observed (`Service.spec`): Swarm stores the IDs there,
    so a name maps to the very secret the proxy's nginx read.
    """
    refs = ((proxy_spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Secrets") or []
    out: dict[str, str] = {}
    for ref in refs:
        if not isinstance(ref, Mapping):
            continue
        target = (ref.get("File") or {}).get("Name")
        secret_id = ref.get("SecretID")
        if isinstance(target, str) and target.startswith(SECRETS_DIR) and isinstance(secret_id, str) and secret_id:
            out[target[len(SECRETS_DIR):]] = secret_id
    return out


def unusable_secret_ids(message: str, proxy_spec: Mapping[str, Any]) -> frozenset[str]:
    """The IDs of the secrets a proxy's failed `nginx -t` could not use (see `unusable_secret_names`).

    A name the proxy's spec does not mount is skipped: nginx cannot have read it, so no ID is blamed.
    The channel key's file is never blamed either (it is not in any nginx config).
    """
    mounted = mounted_secret_ids(proxy_spec)
    return frozenset(mounted[name] for name in unusable_secret_names(message)
                     if name in mounted and name != CHANNEL_SECRET_NAME) | unusable_certs_ids(message)


def still_present(unusable: Set[str], secrets: Iterable[SwarmSecret]) -> frozenset[str]:
    """The unusable IDs whose secret still exists: what a long-running operator keeps between passes
    (a removed secret's ID can never come back, so forgetting it loses nothing)."""
    return frozenset(unusable) & {secret.id for secret in secrets}

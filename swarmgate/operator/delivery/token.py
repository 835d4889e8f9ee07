"""The proxies' bearer token (pure apart from drawing randomness).

The operator never needs the token back: it keeps only its sha256 digest, which the Swarm secret
that carries the token also holds as a label. Managers cannot read a secret's data through the API,
so after an operator restart the label is what lets it check tokens without rotating the secret
(a rotation would restart every proxy task).
"""

import hashlib
import hmac
import secrets

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import TOKEN_DIGEST_LABEL, TOKEN_SECRET_NAME

TOKEN_DIGEST_PREFIX = "sha256:"


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe, so it fits an HTTP header as is."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The digest kept in place of the token, e.g. `sha256:3f2a…`."""
    return TOKEN_DIGEST_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def digest_in_snapshot(observed: ObservedState) -> str | None:
    """The digest kept as a label on the token secret, as a snapshot shows it (None: no secret yet)."""
    for secret in observed.secrets:
        if secret.name == TOKEN_SECRET_NAME and TOKEN_DIGEST_LABEL in secret.labels:
            return secret.labels[TOKEN_DIGEST_LABEL]
    return None


class TokenCheck:
    """Checks presented tokens against a digest; never holds or logs a token itself."""

    def __init__(self, digest: str) -> None:
        if not digest.startswith(TOKEN_DIGEST_PREFIX) or len(digest) != len(TOKEN_DIGEST_PREFIX) + 64:
            raise ValueError("token digest must be 'sha256:' followed by 64 hex digits")
        self._digest = digest

    @property
    def digest(self) -> str:
        return self._digest

    def matches(self, presented: str | None) -> bool:
        """Constant-time comparison of digests, so timing reveals nothing about the token."""
        if not presented:
            return False
        return hmac.compare_digest(token_digest(presented), self._digest)

    def __repr__(self) -> str:
        return f"TokenCheck({self._digest[:15]}…)"

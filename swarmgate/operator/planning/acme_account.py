"""The ACME account key, derived rather than stored, and the HTTP-01 answer every proxy can give (pure).

Durable without storage: the account key is a function of a secret the operator already holds
privately (the delivery channel's 32-byte HMAC key) and of the ACME directory's URL. An operator
that restarts, or a standby on another manager that takes over, computes the same key, so the ACME
server hands back the same account (RFC 8555 §7.3.1: a new-account request for a known key returns
that account) and no second account is ever made. HKDF separates this use of the HMAC key from its
signing of pushes: knowing the account key says nothing about the HMAC key.

Stateless HTTP-01 (RFC 8555 §8.3): the answer to a challenge is `token.thumbprint`, and the
thumbprint of the account key (RFC 7638) is public. So the proxies can answer every challenge from a
fixed configuration that names only the thumbprint: no per-challenge push, nothing to clean up.

Rotating the channel key changes the account key, hence the ACME account: certificates already
issued stay valid, and the next orders are made by the new account.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Where the CA asks and what a token may be: one definition, shared with the template's location.
from swarmgate.models.routing.acme_hosts import TOKEN_PATTERN

# The order n of P-256's base point (SEC 2, §2.4.2): a private scalar lies in [1, n-1].
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
HKDF_INFO_PREFIX: Final = b"swarmgate acme account "
# 64 bits more than the scalar: reduced mod n - 1, the bias is below 2**-64 (FIPS 186-5 A.2.1's way).
_DERIVED_BYTES: Final = 48
MIN_SECRET_BYTES: Final = 32

_TOKEN = re.compile(TOKEN_PATTERN)


def account_key(secret: bytes, directory_url: str) -> ec.EllipticCurvePrivateKey:
    """The EC P-256 account key for one ACME directory, the same on every call with the same inputs.

    The URL is taken as given (no normalisation): the configured `ACMEDirectory` string decides.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an ACME account key needs a secret of at least {MIN_SECRET_BYTES} bytes")
    if not directory_url:
        raise ValueError("an ACME account key needs the directory's URL")
    okm = HKDF(algorithm=hashes.SHA256(), length=_DERIVED_BYTES, salt=None,
               info=HKDF_INFO_PREFIX + directory_url.encode()).derive(secret)
    scalar = int.from_bytes(okm, "big") % (P256_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK of an EC P-256 public key: exactly the members RFC 7638 hashes."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(public.curve, ec.SECP256R1):
        raise ValueError("only P-256 account keys are supported")
    numbers = public.public_numbers()
    return {"crv": "P-256", "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")), "y": _b64url(numbers.y.to_bytes(32, "big"))}


def thumbprint(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """RFC 7638: base64url(SHA-256 of the JWK's required members, sorted, without whitespace)."""
    canonical = json.dumps(public_jwk(key), sort_keys=True, separators=(",", ":")).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def key_authorization(token: str, account_thumbprint: str) -> str:
    """What `GET /.well-known/acme-challenge/<token>` must answer (RFC 8555 §8.1)."""
    if not _TOKEN.fullmatch(token):
        raise ValueError("an ACME token is base64url")
    return f"{token}.{account_thumbprint}"

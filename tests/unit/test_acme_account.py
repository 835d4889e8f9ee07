"""The ACME account key derived from the channel's HMAC key, its RFC 7638 thumbprint, and the HTTP-01
answer (pure; checked against josepy, the JOSE library the ACME client signs with)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from josepy.jwk import JWKEC

from swarmgate.operator.planning.acme_account import (
    P256_ORDER,
    account_key,
    key_authorization,
    public_jwk,
    thumbprint,
)

SECRET = bytes(range(32))
LE = "https://acme-v02.api.letsencrypt.org/directory"
STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"


def private_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_same_secret_and_directory_give_the_same_key() -> None:
    assert private_bytes(account_key(SECRET, LE)) == private_bytes(account_key(SECRET, LE))


def test_each_directory_gets_its_own_key() -> None:
    assert private_bytes(account_key(SECRET, LE)) != private_bytes(account_key(SECRET, STAGING))
    # The URL is taken as written: a trailing slash is another directory.
    assert private_bytes(account_key(SECRET, LE)) != private_bytes(account_key(SECRET, LE + "/"))


def test_each_secret_gets_its_own_key() -> None:
    other = bytes(31) + b"\x01"
    assert private_bytes(account_key(SECRET, LE)) != private_bytes(account_key(other, LE))


def test_the_key_is_a_valid_p256_key_that_signs() -> None:
    key = account_key(SECRET, LE)
    assert isinstance(key.curve, ec.SECP256R1)
    assert 1 <= key.private_numbers().private_value < P256_ORDER
    signature = key.sign(b"payload", ec.ECDSA(hashes.SHA256()))
    key.public_key().verify(signature, b"payload", ec.ECDSA(hashes.SHA256()))  # raises if not


@settings(max_examples=50, deadline=None)
@given(secret=st.binary(min_size=32, max_size=64), url=st.text(min_size=1, max_size=80))
def test_any_secret_and_url_give_a_scalar_in_range(secret: bytes, url: str) -> None:
    assert 1 <= account_key(secret, url).private_numbers().private_value < P256_ORDER


@pytest.mark.parametrize("secret", [b"", bytes(16), bytes(31)])
def test_short_secrets_are_refused(secret: bytes) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        account_key(secret, LE)


def test_an_empty_directory_is_refused() -> None:
    with pytest.raises(ValueError, match="directory"):
        account_key(SECRET, "")


def test_thumbprint_is_rfc7638_as_josepy_computes_it() -> None:
    for url in (LE, STAGING, "https://127.0.0.1:14000/dir"):
        key = account_key(SECRET, url)
        expected = JWKEC(key=key).thumbprint(hash_function=hashes.SHA256)
        assert thumbprint(key) == _b64url(expected)
        assert thumbprint(key.public_key()) == thumbprint(key)


def test_thumbprint_of_rfc7638_shape() -> None:
    jwk = public_jwk(account_key(SECRET, LE))
    assert sorted(jwk) == ["crv", "kty", "x", "y"]
    assert all(len(jwk[c]) == 43 for c in ("x", "y"))  # 32 bytes, base64url without padding
    assert len(thumbprint(account_key(SECRET, LE))) == 43  # a SHA-256


def test_other_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="P-256"):
        thumbprint(ec.generate_private_key(ec.SECP384R1()))


def test_key_authorization_is_token_dot_thumbprint() -> None:
    print_ = thumbprint(account_key(SECRET, LE))
    assert key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", print_) == (
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA." + print_)


@pytest.mark.parametrize("token", ["", "a/b", "a.b", "x y", "../etc", "tok=="])
def test_tokens_that_are_not_base64url_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match="base64url"):
        key_authorization(token, "t")


def test_the_derivation_is_pinned() -> None:
    # A change to the derivation would silently move every deployment to a new ACME account.
    assert thumbprint(account_key(SECRET, LE)) == "yakZF9JeYdAL3F5UKKCc2i-EAHMNZ45yPD1EAmiYmck"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

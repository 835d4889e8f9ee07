"""One ACME (RFC 8555) issuance: find the account, order one host, prove it over HTTP-01, download.

Only the leading operator calls this, off the reconcile thread; it never touches Docker. Proving the
host is not its job: every proxy already answers `GET /.well-known/acme-challenge/<token>` with
`<token>.<thumbprint>` (planning/acme_account.py), so `issue` only tells the CA the challenge is
ready and polls.

* **The account** comes from the account key alone: a new-account request for a key the CA knows
  returns that account (RFC 8555 §7.3.1), so a restarted operator or another manager finds it
  again, and there is never a second one.
* **A fresh key per certificate** (EC P-256), made here and returned with the chain; the caller
  puts both in one Swarm secret.
* **Bounded.** Every request has a timeout (at most 10 s), and polling stops at the deadline:
  `issue` returns or raises within `timeout`, plus at worst one request's timeout and one of acme's
  one-second polls of the order.
* **One error type.** Whatever goes wrong (the network, the CA's TLS, a problem document, a failed
  validation, the deadline) is an `AcmeError` with a one-line reason. Reasons come from the CA's
  problem documents and from what the client saw; no key ever reaches a message.

The `acme` package is certbot's client (ClientV2); `josepy` is its JOSE layer.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass, field
from typing import Final

import requests
from acme import challenges, crypto_util, messages
from acme import errors as acme_errors
from acme.client import ClientNetwork, ClientV2
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import errors as jose_errors
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

USER_AGENT: Final = "swarmgate"
MAX_REQUEST_SECONDS: Final = 10.0
MAX_REASON_CHARS: Final = 300
# Polling an authorization: quick first looks (a CA that validates at once answers within a few
# hundred milliseconds), then once a second.
_FIRST_POLL: Final = 0.1
_MAX_POLL: Final = 1.0


class AcmeError(Exception):
    """An issuance that did not give a certificate. `str()` is one line, safe to log."""

    def __init__(self, reason: str) -> None:
        flat = " ".join(reason.split())
        super().__init__(flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…")

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Issued:
    """A certificate chain (leaf first), its private key (PEM, PKCS#8), the leaf's validity (UTC),
    and the account that ordered it."""

    cert_chain_pem: str
    key_pem: str = field(repr=False)
    not_before: datetime.datetime
    not_after: datetime.datetime
    account_url: str


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def check(self, step: str) -> None:
        if self.left() <= 0:
            raise AcmeError(f"timed out {step}")

    def wall(self) -> datetime.datetime:
        # acme's own polling compares its deadline with naive local time.
        return datetime.datetime.now() + datetime.timedelta(seconds=max(self.left(), 0.0))


def _network(account_key: ec.EllipticCurvePrivateKey, ca_bundle: str | None, timeout: float) -> ClientNetwork:
    net = ClientNetwork(JWKEC(key=account_key), alg=ES256, user_agent=USER_AGENT,
                        timeout=max(1, math.ceil(min(timeout, MAX_REQUEST_SECONDS))))
    if ca_bundle is not None:
        # acme hands `verify_ssl` to requests as `verify`, which also takes a CA bundle's path: then
        # only that bundle is trusted (a private CA such as Pebble).
        net.verify_ssl = ca_bundle  # type: ignore[assignment]
    return net


def _account(client: ClientV2, email: str | None) -> str:
    registration = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
    try:
        regr = client.new_account(registration)
    except acme_errors.ConflictError as known:
        # The CA knows this key: `known.location` is the account. Sign with it from now on.
        regr = messages.RegistrationResource(uri=known.location, body=messages.Registration())
        client.net.account = regr
    if not regr.uri:
        raise AcmeError("the CA returned no account URL")
    return str(regr.uri)


def _new_key_and_csr(host: str) -> tuple[str, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem.decode(), crypto_util.make_csr(key_pem, [host])


def _http01(authzr: messages.AuthorizationResource) -> messages.ChallengeBody:
    for challb in authzr.body.challenges:
        if isinstance(challb.chall, challenges.HTTP01):
            return challb
    raise AcmeError(f"the CA offers no http-01 challenge for {authzr.body.identifier.value}")


def _failure(authzr: messages.AuthorizationResource) -> str:
    host = authzr.body.identifier.value
    for challb in authzr.body.challenges:
        if challb.error is not None:
            return f"validation of {host} failed: {_problem(challb.error)}"
    return f"authorization of {host} is {authzr.body.status.name}"


def _problem(error: messages.Error) -> str:
    code = error.code or error.typ
    return f"{code}: {error.detail}" if error.detail else str(code)


def _prove(client: ClientV2, orderr: messages.OrderResource, account: JWK, deadline: _Deadline) -> None:
    """Answer each pending authorization's HTTP-01 challenge, then poll each to a final status."""
    pending: list[messages.AuthorizationResource] = []
    for authzr in orderr.authorizations:
        if authzr.body.status == messages.STATUS_VALID:
            continue  # the CA reused a validation it already has
        if authzr.body.status != messages.STATUS_PENDING:
            raise AcmeError(_failure(authzr))
        challb = _http01(authzr)
        deadline.check("answering the challenge")
        client.answer_challenge(challb, challb.chall.response(account))
        pending.append(authzr)
    for authzr in pending:
        pause = _FIRST_POLL
        while True:
            deadline.check(f"waiting for the CA to validate {authzr.body.identifier.value}")
            current, _ = client.poll(authzr)
            status = current.body.status
            if status == messages.STATUS_VALID:
                break
            if status != messages.STATUS_PENDING:
                raise AcmeError(_failure(current))
            time.sleep(max(0.0, min(pause, deadline.left())))
            pause = min(pause * 2, _MAX_POLL)


def _validity(chain_pem: str) -> tuple[datetime.datetime, datetime.datetime]:
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    except (ValueError, IndexError) as bad:
        raise AcmeError("the CA's certificate chain is not PEM") from bad
    return leaf.not_valid_before_utc, leaf.not_valid_after_utc


def issue(directory: str, account_key: ec.EllipticCurvePrivateKey, email: str | None, host: str,
          ca_bundle: str | None, timeout: float) -> Issued:
    """Order and download a certificate for `host` from the ACME server at `directory`.

    `ca_bundle` is a PEM file trusted for the server's HTTPS instead of the system's roots (a private
    CA); `timeout` bounds the whole issuance in seconds. Raises `AcmeError`.
    """
    deadline = _Deadline(timeout)
    account = JWKEC(key=account_key)
    net = _network(account_key, ca_bundle, timeout)
    try:
        client = ClientV2(ClientV2.get_directory(directory, net), net)
        deadline.check("reading the directory")
        account_url = _account(client, email)
        deadline.check("finding the account")
        key_pem, csr_pem = _new_key_and_csr(host)
        orderr = client.new_order(csr_pem)
        _prove(client, orderr, account, deadline)
        deadline.check("before finalizing")
        final = client.finalize_order(orderr, deadline.wall())
    except AcmeError:
        raise
    except acme_errors.ValidationError as failed:
        raise AcmeError(_failure(failed.failed_authzrs[0]) if failed.failed_authzrs else "validation failed") from None
    except acme_errors.IssuanceError as refused:
        raise AcmeError(f"the CA refused to issue for {host}: {_problem(refused.error)}") from None
    except acme_errors.TimeoutError:
        raise AcmeError(f"timed out waiting for the certificate of {host}") from None
    except messages.Error as problem:
        raise AcmeError(f"the CA answered {_problem(problem)}") from None
    except requests.exceptions.SSLError:
        raise AcmeError(f"TLS to {directory} failed: its certificate is not trusted (ACMECABundle?)") from None
    except requests.exceptions.Timeout:
        raise AcmeError(f"{directory} did not answer in time") from None
    except requests.exceptions.ConnectionError:
        raise AcmeError(f"cannot connect to {directory}") from None
    except (requests.exceptions.RequestException, acme_errors.Error, jose_errors.Error, ValueError) as other:
        # Their messages can quote a whole response; the type names what failed, in one line.
        raise AcmeError(f"ACME exchange with {directory} failed ({type(other).__name__})") from None
    finally:
        net.session.close()
    if not final.fullchain_pem:
        raise AcmeError(f"the CA issued no certificate for {host}")
    not_before, not_after = _validity(final.fullchain_pem)
    return Issued(final.fullchain_pem, key_pem, not_before, not_after, account_url)

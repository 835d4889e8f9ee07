"""The delivery channel's key: what only the operator and the proxies hold (pure apart from randomness).

One file, kept in one Swarm secret that the operator's and the proxies' services mount (Swarm
secrets are its only private store: the API lists them, never their data):

    swarmgate/3 channel-key HMACHEX
    -----BEGIN CERTIFICATE----- ...
    -----BEGIN PRIVATE KEY----- ...

- The HMAC key signs every push (with the target task, the leader's term and a sequence number) and
  every status an agent writes, so neither can be forged, replayed or aimed elsewhere.
- The certificate and its key make the channel confidential: nginx serves the control server over
  TLS with them, and trusts only that same certificate for client certificates. The operator pins
  it as the one server certificate it accepts and presents it as its client certificate. So a
  connection succeeds only between two holders of the file, and what crosses the wire is TLS.

The first line is PEM "explanatory text", which OpenSSL (so nginx) skips, so nginx reads the
certificate and the key straight from this file. Nothing here logs or prints key material.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import hmac
import re
import secrets
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from swarmgate.renderers.nginx import CONTROL_HOST

HEADER = "swarmgate/3 channel-key"
_HEADER_LINE = re.compile(rf"{re.escape(HEADER)} ([0-9a-f]{{64}})\n")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\n[A-Za-z0-9+/=\n]+-----END \1-----\n")
VALID_DAYS = 3650  # pinned, never checked against a public CA; rotation replaces it


class ChannelKeyError(ValueError):
    """A key file that is not one (the message never quotes its content)."""


@dataclass(frozen=True)
class ChannelKey:
    hmac_key: bytes = field(repr=False)
    cert_pem: str = field(repr=False)
    key_pem: str = field(repr=False)

    @classmethod
    def generate(cls) -> ChannelKey:
        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CONTROL_HOST)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(CONTROL_HOST)]), critical=False)
            # A CA, so that OpenSSL takes it as its own trust anchor on both ends of the connection.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(private, hashes.SHA256())
        )
        key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
        return cls(secrets.token_bytes(32), cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem)

    @classmethod
    def parse(cls, text: str) -> ChannelKey:
        header = _HEADER_LINE.match(text)
        if header is None:
            raise ChannelKeyError(f"not a swarmgate channel key: the first line must be '{HEADER} <64 hex>'")
        blocks = {m.group(1): m.group(0) for m in _PEM_BLOCK.finditer(text, header.end())}
        if "CERTIFICATE" not in blocks or "PRIVATE KEY" not in blocks:
            raise ChannelKeyError("not a swarmgate channel key: it needs a CERTIFICATE and a PRIVATE KEY block")
        return cls(bytes.fromhex(header.group(1)), blocks["CERTIFICATE"], blocks["PRIVATE KEY"])

    @classmethod
    def read(cls, path: Path) -> ChannelKey:
        try:
            return cls.parse(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise ChannelKeyError(f"cannot read the channel key {path}: {type(exc).__name__}") from None

    def file_text(self) -> str:
        return f"{HEADER} {self.hmac_key.hex()}\n{self.cert_pem}{self.key_pem}"

    @functools.cached_property
    def fingerprint(self) -> str:
        """A public name for this key (the certificate's sha256), safe to log and show."""
        der = x509.load_pem_x509_certificate(self.cert_pem.encode()).public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()

    def mac(self, data: bytes) -> str:
        return hmac.new(self.hmac_key, data, hashlib.sha256).hexdigest()

    def verify(self, data: bytes, mac: str) -> bool:
        return hmac.compare_digest(self.mac(data), mac)

    def client_context(self) -> ssl.SSLContext:
        """TLS to a proxy's control server: only this certificate is trusted, and it is presented."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cadata=self.cert_pem)
        # The ssl module loads a client certificate only from a file: a private temp file, gone at once.
        with tempfile.NamedTemporaryFile("w", prefix="swarmgate-channel-", suffix=".pem") as pem:
            pem.write(self.cert_pem + self.key_pem)
            pem.flush()
            context.load_cert_chain(pem.name)
        return context

"""Pebble, Let's Encrypt's test ACME CA, run on the lab's host for the ACME tests.

    python -m lab.pebble start --answer-ip 127.0.0.1 [--listen 198.18.0.1] [--validity 300]
    python -m lab.pebble status | root | stop

Two processes, both from Debian's `pebble` package, started in their own sessions and stopped by pid:

* `pebble-challtestsrv` is Pebble's DNS: it answers every A query with `--answer-ip` (no AAAA, so
  Pebble's validation dials that address and nothing else). Its challenge servers are off.
* `pebble` is the CA. Its ACME and management listeners are on `--listen` (loopback, or the lab
  bridge's host address so that the lab's nodes can reach it), on free ports; it validates HTTP-01
  on port 80 and TLS-ALPN-01 on 443, like a public CA. Its HTTPS certificate comes from a small CA
  made here, whose certificate (`listener-ca.pem`) is what a client trusts (`ACMECABundle`). Its own
  issuing root is new at every start: `root` prints it (`/roots/0` of the management listener).

Every address it listens on or answers with is loopback or on the lab bridge (198.18.0.0/24); any
other is refused. Pebble's random sleeps and bad-nonce injection are off (`PEBBLE_VA_NOSLEEP=1`,
`PEBBLE_WFE_NONCEREJECT=0`), and so is its reuse of valid authorizations (`PEBBLE_AUTHZREUSE=0`)
unless asked, so each order is validated: a test of a failing validation cannot pass on a reused
one. Pebble 2.4 reads `certificateValidityPeriod` (seconds) from its configuration: `--validity`
gives certificates that live minutes.

State lives in `.lab/pebble/` (`lab.py down` removes `.lab`, so stop Pebble first): the
configuration, the listener's certificates, one log and one pid file per process. A pid file holds
the pid and the exact command line; `stop` signals a pid only while `/proc` shows that command line,
so a recycled pid is never touched. `start` is idempotent (the same settings and both processes
answering: nothing to do) and first stops whatever a killed run left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / ".lab" / "pebble"  # inside the lab's state folder (lab/common.py's LAB_DIR)
PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"
LOOPBACK = "127.0.0.1"
LAB_NETWORK = ipaddress.ip_network("198.18.0.0/24")
HTTP01_PORT = 80
TLSALPN01_PORT = 443
START_SECONDS = 15.0
STOP_SECONDS = 5.0


class PebbleError(RuntimeError):
    pass


def _local(address: str, what: str) -> str:
    """Only loopback and the lab bridge: Pebble's traffic never leaves this host and its lab."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as bad:
        raise PebbleError(f"{what} {address!r} is not an IP address") from bad
    if not (ip.is_loopback or ip in LAB_NETWORK):
        raise PebbleError(f"{what} {address} is neither loopback nor on the lab bridge ({LAB_NETWORK})")
    return address


@dataclass(frozen=True)
class Settings:
    answer_ip: str  # what Pebble's DNS answers for every name: where HTTP-01 is validated
    listen: str = LOOPBACK  # where the ACME and management listeners are
    validity_seconds: int | None = None  # None: Pebble's default (5 years)
    authz_reuse: int = 0  # percent of orders that may reuse a valid authorization


@dataclass(frozen=True)
class Pebble:
    """A running Pebble: where to find it and what to trust."""

    settings: Settings
    directory_url: str
    management_url: str
    ca_bundle: str  # the PEM to trust for the ACME server's HTTPS
    dns: str  # host:port of its DNS (pebble-challtestsrv)

    def root_pem(self, timeout: float = 5.0) -> str:
        """Pebble's issuing root, new at every start: what issued certificates chain up to."""
        context = ssl.create_default_context(cafile=self.ca_bundle)
        with urllib.request.urlopen(f"{self.management_url}/roots/0", timeout=timeout, context=context) as answer:
            return str(answer.read().decode())


# --- processes ------------------------------------------------------------------------------------


def _pid_file(home: Path, name: str) -> Path:
    return home / f"{name}.pid"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # Each argument ends with a NUL (an empty argument too); a zombie's command line is empty.
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None


def _recorded(home: Path, name: str) -> tuple[int, list[str]] | None:
    """The pid a pid file names, if that process still runs the command line it recorded."""
    try:
        record = json.loads(_pid_file(home, name).read_text())
        pid, argv = int(record["pid"]), [str(a) for a in record["argv"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (pid, argv) if _cmdline(pid) == argv else None


def _spawn(home: Path, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (home / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=home, start_new_session=True)
    # Written at once, so a run killed right after this still leaves something `stop` can find.
    _pid_file(home, name).write_text(json.dumps({"pid": proc.pid, "argv": argv}))
    return proc


def _end(home: Path, name: str) -> None:
    found = _recorded(home, name)
    if found is not None:
        pid, argv = found
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + STOP_SECONDS
        while _cmdline(pid) == argv and time.monotonic() < end:
            _reap(pid)
            time.sleep(0.05)
        if _cmdline(pid) == argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
    _pid_file(home, name).unlink(missing_ok=True)


def _reap(pid: int) -> None:
    # Our own child (started by this process) stays a zombie, with its command line gone, until
    # waited for; someone else's child is not ours to wait for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _free_port(address: str, udp_too: bool = False) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((address, 0))
            except OSError as refused:
                raise PebbleError(f"cannot listen on {address} (the lab bridge's address needs the lab up): "
                                  f"{refused.strerror}") from refused
            port = int(tcp.getsockname()[1])
            if not udp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((address, port))
                except OSError:
                    continue
                return port
    raise PebbleError(f"no free port on {address}")


# --- the listener's certificate -------------------------------------------------------------------


def _listener_ca(home: Path, now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA of Pebble's HTTPS listener, kept across starts so that a client's `ACMECABundle` stays
    valid; made anew when missing, unreadable or about to expire."""
    ca_pem, ca_key_pem = home / "listener-ca.pem", home / "listener-ca.key"
    with contextlib.suppress(OSError, ValueError):
        cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey) and cert.not_valid_after_utc > now + datetime.timedelta(days=31):
            return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarmgate lab: Pebble listener CA")])
    usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(ca_key_pem, key)
    ca_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _write_listener_tls(home: Path, listen: str) -> None:
    """A new leaf for the listener (`listen` and loopback), signed by the listener's CA."""
    now = datetime.datetime.now(datetime.UTC)
    ca_cert, ca_key = _listener_ca(home, now)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    addresses = sorted({listen, LOOPBACK})
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)])
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_cert.subject).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(home / "listener.key", leaf_key)
    (home / "listener.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


# --- start, status, stop --------------------------------------------------------------------------


def _env(settings: Settings) -> dict[str, str]:
    # Nothing from the caller's proxy settings: validation must dial the answer address itself.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE=str(settings.authz_reuse))
    return env


def status(home: Path = HOME) -> Pebble | None:
    """The Pebble this folder started, if both its processes still run and it answers."""
    try:
        state = json.loads((home / "state.json").read_text())
        running = Pebble(settings=Settings(**state.pop("settings")), **state)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if _recorded(home, "pebble") is None or _recorded(home, "dns") is None:
        return None
    return running if _answers(running) else None


def _answers(pebble: Pebble, timeout: float = 2.0) -> bool:
    context = ssl.create_default_context(cafile=pebble.ca_bundle)
    try:
        with urllib.request.urlopen(pebble.directory_url, timeout=timeout, context=context) as answer:
            return "newOrder" in answer.read().decode()
    except (OSError, ValueError):
        return False


def start(settings: Settings, home: Path = HOME) -> Pebble:
    """Pebble and its DNS, running with `settings` (already so: returned as found)."""
    _local(settings.answer_ip, "the DNS answer")
    _local(settings.listen, "the listen address")
    for binary in (PEBBLE, CHALLTESTSRV):
        if not os.access(binary, os.X_OK):
            raise PebbleError(f"{binary} is missing: install Debian's pebble package (scripts/install-deps.sh)")
    found = status(home)
    if found is not None and found.settings == settings:
        return found
    stop(home)
    home.mkdir(parents=True, exist_ok=True)
    _write_listener_tls(home, settings.listen)
    dns_port = _free_port(LOOPBACK, udp_too=True)
    acme_port, management_port = _free_port(settings.listen), _free_port(settings.listen)
    config: dict[str, object] = {
        "listenAddress": f"{settings.listen}:{acme_port}",
        "managementListenAddress": f"{settings.listen}:{management_port}",
        "certificate": str(home / "listener.pem"),
        "privateKey": str(home / "listener.key"),
        "httpPort": HTTP01_PORT,
        "tlsPort": TLSALPN01_PORT,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if settings.validity_seconds is not None:
        config["certificateValidityPeriod"] = settings.validity_seconds
    (home / "pebble-config.json").write_text(json.dumps({"pebble": config}, indent=2))
    env = _env(settings)
    dns_argv = [CHALLTESTSRV, "-dns01", f"{LOOPBACK}:{dns_port}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                "-management", f"{LOOPBACK}:{_free_port(LOOPBACK)}",
                "-defaultIPv4", settings.answer_ip, "-defaultIPv6", ""]
    procs = [_spawn(home, "dns", dns_argv, env)]
    pebble_argv = [PEBBLE, "-config", str(home / "pebble-config.json"), "-dnsserver", f"{LOOPBACK}:{dns_port}"]
    procs.append(_spawn(home, "pebble", pebble_argv, env))
    pebble = Pebble(settings, f"https://{settings.listen}:{acme_port}/dir", f"https://{settings.listen}:{management_port}",
                    str(home / "listener-ca.pem"), f"{LOOPBACK}:{dns_port}")
    end = time.monotonic() + START_SECONDS
    while not _answers(pebble, timeout=1.0):
        exited = [p for p in procs if p.poll() is not None]
        if exited or time.monotonic() > end:
            stop(home)
            tail = "".join(_tail(home / f"{n}.log") for n in ("dns", "pebble"))
            raise PebbleError(f"Pebble did not start ({'exited' if exited else 'timed out'}):\n{tail}")
        time.sleep(0.1)
    state = asdict(pebble)
    (home / "state.json").write_text(json.dumps(state, indent=2))
    return pebble


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def stop(home: Path = HOME) -> None:
    """Stops what this folder's pid files name (only while each pid still runs what it recorded)."""
    for name in ("pebble", "dns"):
        _end(home, name)
    (home / "state.json").unlink(missing_ok=True)


@contextlib.contextmanager
def running(settings: Settings, home: Path = HOME) -> Iterator[Pebble]:
    """Pebble for the length of a `with` block, stopped after."""
    try:
        yield start(settings, home)
    finally:
        stop(home)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.pebble", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("start", help="start (or keep) Pebble and its DNS")
    up.add_argument("--answer-ip", default=LOOPBACK, help="the address every name resolves to")
    up.add_argument("--listen", default=LOOPBACK, help="where the ACME and management listeners are")
    up.add_argument("--validity", type=int, default=None, help="certificate lifetime in seconds")
    up.add_argument("--authz-reuse", type=int, default=0, help="percent of orders that may reuse a validation")
    for name, text in (("status", "print where the running Pebble is"), ("root", "print Pebble's issuing root"),
                       ("stop", "stop Pebble and its DNS")):
        commands.add_parser(name, help=text)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            pebble = start(Settings(args.answer_ip, args.listen, args.validity, args.authz_reuse))
            print(json.dumps(asdict(pebble), indent=2))
        elif args.command == "stop":
            stop()
        else:
            found = status()
            if found is None:
                print("Pebble is not running", file=sys.stderr)
                return 1
            print(json.dumps(asdict(found), indent=2) if args.command == "status" else found.root_pem(), end="\n")
    except PebbleError as failed:
        print(f"pebble: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`nginx -t` for rendered configs. This module does I/O: it runs the machine's nginx (and, once per
process, `openssl`) in temp directories; nothing else in the renderers does.

Some lines of a rendered config depend on the machine the proxy runs on rather than on the text, so
the checked copy points them somewhere that exists here: the `user` directive names the user running
the check (the proxy image's `nginx` user need not exist here), `pid` and log files that are not
`/dev/*` go into the temp prefix, TLS files under /run/secrets/ (Swarm secrets, mounted only inside
the proxy) or /run/swarmgate-certs/ (the certificate courier's copies, only on the LB nodes) and
the control server's own TLS (the agent's file, only in a proxy) become a throwaway self-signed pair,
and `ssl_dhparam` a standard group (RFC 7919 ffdhe2048). Both are made once per process with the
`openssl` CLI. Everything else is checked exactly as written. Upstreams are IP addresses, so the check needs no DNS.

`NginxGate` is what the operator asks before it publishes anything: one `nginx -t` per distinct
config (verdicts are kept by digest), and a plain "cannot check" when the machine has no nginx.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections import OrderedDict
from pathlib import Path

from swarmgate.errors import SwarmgateError

log = logging.getLogger("swarmgate.validate")

_USER = re.compile(r"^(\s*)user\s+[^;]*;", re.MULTILINE)
_PID = re.compile(r"^(\s*)pid\s+[^;]*;", re.MULTILINE)
# A TLS backend's CA bundle (`proxy_ssl_trusted_certificate`) is a secret too; the throwaway
# self-signed certificate is a valid bundle of one.
_SECRET = re.compile(
    r"^(\s*)(ssl_certificate|ssl_certificate_key|proxy_ssl_trusted_certificate)\s+/run/(?:secrets|swarmgate-certs)/[^;\s]+;",
    re.MULTILINE)
# The agent's own file inside the control server (TLS, client verification, locations) exists only in
# a proxy task: here the server gets the throwaway pair, which is all `nginx -t` needs of it.
_CONTROL_INCLUDE = re.compile(r"^(\s*)include\s+/var/lib/swarmgate/control/\*\.conf;", re.MULTILINE)
_DHPARAM = re.compile(r"^(\s*)ssl_dhparam\s+[^;\s]+;", re.MULTILINE)
# error_log PATH [level]; access_log PATH [format...]: a path the proxy writes, which need not exist here.
_LOG = re.compile(r"^(\s*)(error_log|access_log)\s+(/[^;\s]+)", re.MULTILINE)
TIMEOUT_SECONDS = 60
# Debian's nginx loads dynamic modules (the stream module SSL passthrough needs) by paths relative to
# its prefix (`load_module modules/ngx_stream_module.so;`); the check runs under a prefix of its own.
MODULES_DIR = Path("/usr/lib/nginx/modules")
_PROBE = "events {}\nhttp {\n    server {\n        listen 127.0.0.1:8080;\n        return 503;\n    }\n}\n"


class NginxRejectedConfig(SwarmgateError):
    """`nginx -t` rejected a rendered config; the message is nginx's own (first emerg line)."""


class NginxUnavailable(SwarmgateError):
    """This machine cannot run the check (no nginx, or no openssl for a config with TLS)."""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise NginxUnavailable("openssl is not installed: cannot make the throwaway TLS files for nginx -t")
    try:
        subprocess.run([binary, *args], check=True, capture_output=True, timeout=TIMEOUT_SECONDS,
                       stdin=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError) as exc:
        raise NginxUnavailable(f"openssl {args[0]} failed: {exc}") from None


def _throwaway_tls_pair(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
             "-subj", "/CN=swarmgate-check", "-keyout", str(key), "-out", str(cert))
    return cert, key


def _standard_dhparam(directory: Path) -> Path:
    path = directory / "dhparam.pem"
    _openssl("genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048", "-out", str(path))
    return path


_FILES: dict[str, Path] = {}


def _check_file(kind: str) -> Path:
    """A throwaway file made once per process (`cert`, `key` or `dhparam`)."""
    if kind not in _FILES or not _FILES[kind].exists():
        keep = Path(tempfile.mkdtemp(prefix="swarmgate-tls-"))
        atexit.register(shutil.rmtree, keep, True)
        if kind == "dhparam":
            _FILES["dhparam"] = _standard_dhparam(keep)
        else:
            _FILES["cert"], _FILES["key"] = _throwaway_tls_pair(keep)
    return _FILES[kind]


def localized(text: str, prefix: Path, tls: tuple[Path, Path] | None, *, dhparam: Path | None = None) -> str:
    """The copy of `text` that is checked here (see the module docstring)."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    out = _USER.sub(lambda m: f"{m.group(1)}user {user};", text)
    out = _PID.sub(lambda m: f"{m.group(1)}pid {prefix / 'nginx.pid'};", out)
    logs = prefix / "logs"

    def log_path(m: re.Match[str]) -> str:
        if m.group(3).startswith("/dev/"):
            return m.group(0)
        logs.mkdir(exist_ok=True)
        name = hashlib.sha256(m.group(3).encode()).hexdigest()[:12]
        return f"{m.group(1)}{m.group(2)} {logs / name}.log"

    out = _LOG.sub(log_path, out)
    if tls is not None:
        cert, key = tls
        out = _SECRET.sub(
            lambda m: f"{m.group(1)}{m.group(2)} {key if m.group(2) == 'ssl_certificate_key' else cert};", out
        )
        out = _CONTROL_INCLUDE.sub(lambda m: f"{m.group(1)}ssl_certificate {cert}; ssl_certificate_key {key};", out)
    if dhparam is not None:
        out = _DHPARAM.sub(lambda m: f"{m.group(1)}ssl_dhparam {dhparam};", out)
    return out


def _message(stderr: str, returncode: int, prefix: Path) -> str:
    output = stderr.splitlines()
    lines = [line for line in output if "[emerg]" in line] or [line for line in output if "[alert]" in line] or output
    message = lines[0] if lines else f"nginx -t exited with {returncode}"
    # Drop nginx's timestamp/pid prefix and the temp path: the rest is the useful part.
    message = re.sub(r"^\S+ \S+ \[\w+\] \d+#\d+: ", "", message).replace(str(prefix) + "/", "")
    return message


def nginx_check(text: str) -> None:
    """Raise `NginxRejectedConfig` with nginx's message when `nginx -t` rejects `text`.

    `NginxUnavailable` when the machine cannot run the check at all."""
    binary = nginx_binary()
    if binary is None:
        raise NginxUnavailable("nginx is not installed: cannot check the rendered config")
    tls = (_check_file("cert"), _check_file("key")) if _SECRET.search(text) or _CONTROL_INCLUDE.search(text) else None
    dhparam = _check_file("dhparam") if _DHPARAM.search(text) else None
    with tempfile.TemporaryDirectory(prefix="swarmgate-nginx-t-") as tmp:
        prefix = Path(tmp)
        if MODULES_DIR.is_dir():
            (prefix / "modules").symlink_to(MODULES_DIR)
        conf = prefix / "nginx.conf"
        conf.write_text(localized(text, prefix, tls, dhparam=dhparam), encoding="utf-8")
        try:
            result = subprocess.run(
                [binary, "-t", "-q", "-p", str(prefix), "-e", "stderr", "-c", str(conf)],
                capture_output=True, text=True, timeout=TIMEOUT_SECONDS, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise NginxRejectedConfig(f"nginx -t did not finish within {TIMEOUT_SECONDS} s") from None
        except OSError as exc:
            raise NginxUnavailable(f"cannot run {binary}: {exc.strerror or exc}") from None
        if result.returncode != 0:
            raise NginxRejectedConfig(_message(result.stderr, result.returncode, prefix))


class NginxGate:
    """The operator's check before it publishes a config (I/O: runs `nginx -t`).

    `verdict(text)` is None when nginx accepts the text (or when this machine cannot check it: then
    the agents' own `nginx -t` on each proxy is the only check, as before, and that is logged once),
    else nginx's one-line message. A rendered config is the same text pass after pass until something
    changes, so verdicts are kept per digest and nginx runs once per distinct config.
    """

    def __init__(self, *, keep: int = 32) -> None:
        self._verdicts: OrderedDict[str, str | None] = OrderedDict()
        self._keep = keep
        self.unavailable: str | None = None
        self.checks = 0
        self._probed = False

    def _probe(self) -> None:
        """Once: nginx -t of a config any nginx accepts. If even that fails, the machine (a missing
        directory, a broken binary) is what fails, and rejecting every config for it would freeze
        every route: say so and check nothing."""
        self._probed = True
        try:
            nginx_check(_PROBE)
        except NginxRejectedConfig as exc:
            raise NginxUnavailable(f"nginx -t fails here even on a minimal config: {exc}") from None

    def verdict(self, text: str) -> str | None:
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in self._verdicts:
            self._verdicts.move_to_end(digest)
            return self._verdicts[digest]
        try:
            if not self._probed:
                self._probe()
            self.checks += 1
            nginx_check(text)
            found: str | None = None
        except NginxRejectedConfig as exc:
            found = str(exc)
        except NginxUnavailable as exc:
            if self.unavailable is None:
                log.warning("rendered configs are published without nginx -t on the operator; each proxy's "
                            "agent still checks before it loads one", extra={"reason": str(exc)})
            self.unavailable = str(exc)
            return None
        self._verdicts[digest] = found
        while len(self._verdicts) > self._keep:
            self._verdicts.popitem(last=False)
        return found

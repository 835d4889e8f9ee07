"""`nginx -t` for rendered configs. This module does I/O: it runs the machine's nginx in a temp prefix.

Three things in a rendered config depend on the machine the proxy runs on rather than on the text,
so the checked copy points them somewhere that exists here: the `user` directive names the user
running the check (the proxy image's `nginx` user need not exist on this machine), `pid` goes into
the temp prefix, and TLS files under /run/secrets/ (Swarm secrets, mounted only inside the proxy)
are replaced by a throwaway self-signed pair. Everything else is checked exactly as written.
Upstreams are IP addresses, so the check needs no DNS.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from swarmgate.errors import SwarmgateError

_USER = re.compile(r"^(\s*)user\s+[^;]*;", re.MULTILINE)
_PID = re.compile(r"^(\s*)pid\s+[^;]*;", re.MULTILINE)
_SECRET = re.compile(r"^(\s*)(ssl_certificate|ssl_certificate_key)\s+/run/secrets/[^;\s]+;", re.MULTILINE)


class NginxRejectedConfig(SwarmgateError):
    """`nginx -t` rejected a rendered config; the message is nginx's own (first emerg line)."""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _throwaway_tls_pair(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=check",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def localized(text: str, prefix: Path, tls: tuple[Path, Path] | None) -> str:
    """The copy of `text` that is checked here (see the module docstring)."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    out = _USER.sub(lambda m: f"{m.group(1)}user {user};", text)
    out = _PID.sub(lambda m: f"{m.group(1)}pid {prefix / 'nginx.pid'};", out)
    if tls is not None:
        cert, key = tls
        out = _SECRET.sub(
            lambda m: f"{m.group(1)}{m.group(2)} {cert if m.group(2) == 'ssl_certificate' else key};", out
        )
    return out


_TLS_CACHE: dict[str, tuple[Path, Path]] = {}


def nginx_check(text: str) -> None:
    """Raise `NginxRejectedConfig` with nginx's message when `nginx -t` rejects `text`."""
    binary = nginx_binary()
    if binary is None:
        raise SwarmgateError("nginx is not installed: cannot check the rendered config")
    with tempfile.TemporaryDirectory(prefix="swarmgate-nginx-t-") as tmp:
        prefix = Path(tmp)
        tls = None
        if _SECRET.search(text):
            # One throwaway pair per process: generating RSA keys costs far more than nginx -t.
            if "pair" not in _TLS_CACHE or not _TLS_CACHE["pair"][0].exists():
                keep = Path(tempfile.mkdtemp(prefix="swarmgate-tls-"))
                atexit.register(shutil.rmtree, keep, True)
                _TLS_CACHE["pair"] = _throwaway_tls_pair(keep)
            tls = _TLS_CACHE["pair"]
        conf = prefix / "nginx.conf"
        conf.write_text(localized(text, prefix, tls), encoding="utf-8")
        result = subprocess.run(
            [binary, "-t", "-q", "-p", str(prefix), "-e", "stderr", "-c", str(conf)],
            capture_output=True, text=True, timeout=60,
        )
    if result.returncode != 0:
        output = result.stderr.splitlines()
        lines = [line for line in output if "[emerg]" in line] or output
        message = lines[0] if lines else f"nginx -t exited with {result.returncode}"
        # Drop nginx's timestamp/pid prefix and the temp path: the rest is the useful part.
        message = re.sub(r"^\S+ \S+ \[emerg\] \d+#\d+: ", "", message).replace(str(prefix) + "/", "")
        raise NginxRejectedConfig(message)

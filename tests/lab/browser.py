"""A real headless browser (Debian's `chromium`) for the lab's tests (does I/O: runs chromium).

`dom` is the page as the browser built it (its serialized DOM after load), `screenshot` a PNG of
it. Each call is one short-lived chromium with a throwaway profile, no proxy, no GPU; as root it
needs `--no-sandbox`. Only lab addresses are opened (tests.lab.http's rule).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from tests.lab.http import assert_lab_route

WINDOW = "1280,1240"


def _chromium(url: str, *args: str, timeout: float = 60) -> str:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (scripts/install-deps.sh installs it)"
    assert_lab_route(urlsplit(url).hostname or "")
    with tempfile.TemporaryDirectory(prefix="swarmgate-chromium-") as profile:
        proc = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--hide-scrollbars",
             "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", f"--window-size={WINDOW}",
             *args, url], capture_output=True, text=True, timeout=timeout, check=False, cwd=profile)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def dom(url: str) -> str:
    """The page's DOM as chromium serializes it once the page has loaded."""
    return _chromium(url, "--dump-dom")


def screenshot(url: str, path: Path) -> bytes:
    """A PNG of the page at `url`, written to `path`; its bytes."""
    _chromium(url, f"--screenshot={path}")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    return data

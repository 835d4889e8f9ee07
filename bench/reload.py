"""What a route change costs the proxy's nginx at 1,000 and 10,000 services (loopback only).

`python bench/reload.py [SIZES...]` renders the proxy config for a Swarm of N routed services (the
same Swarm as bench/core_pass.py), starts the machine's nginx on it (listening on 127.0.0.1 only),
then publishes the config of N+1 services the way agent.sh applies one: `nginx -t`, then HUP. It
measures the check, the time from HUP until new workers serve and the old ones are gone, and the
memory of all nginx processes (PSS, so pages shared between master and workers count once) before
and at its peak during the reload, sampled every 10 ms. Prints one JSON object per size.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.core_pass import TOML, api_responses  # noqa: E402
from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.models.swarm.observed import ObservedState  # noqa: E402
from swarmgate.operator.planning.desired import compute_desired  # noqa: E402
from swarmgate.renderers.validate import localized, nginx_binary  # noqa: E402


def rendered(services: int) -> str:
    docs = {kind: json.loads(text) for kind, text in api_responses(services).items()}
    desired = compute_desired(parse_config(TOML, source="bench"), ObservedState.from_api(**docs))
    return desired.extensions[0].rendered.text


def on_loopback(text: str, prefix: Path) -> str:
    text = localized(text, prefix, None)
    text = re.sub(r"^(\s*)listen 80\b", r"\1listen 127.0.0.1:18480", text, flags=re.M)
    return re.sub(r"^(\s*)listen 443\b", r"\1listen 127.0.0.1:18443", text, flags=re.M)


def family(master: int) -> list[int]:
    pids = [master]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def measure(services: int) -> dict[str, Any]:
    binary = nginx_binary()
    assert binary is not None, "nginx is not installed"
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        conf = prefix / "nginx.conf"
        conf.write_text(on_loopback(rendered(services), prefix))
        subprocess.run([binary, "-p", str(prefix), "-c", str(conf)], check=True, timeout=300)
        master = int((prefix / "nginx.pid").read_text())
        try:
            deadline = time.time() + 120
            while len(family(master)) < 2 and time.time() < deadline:
                time.sleep(0.05)
            before = pss_mib(family(master))
            old_workers = set(family(master)) - {master}
            conf.write_text(on_loopback(rendered(services + 1), prefix))
            start = time.perf_counter()
            subprocess.run([binary, "-t", "-q", "-p", str(prefix), "-c", str(conf)], check=True, timeout=300)
            checked = time.perf_counter()
            os.kill(master, signal.SIGHUP)
            peak = before
            while time.perf_counter() - checked < 120:
                pids = family(master)
                peak = max(peak, pss_mib(pids))
                workers = set(pids) - {master}
                if workers and not workers & old_workers:
                    break
                time.sleep(0.01)
            served = time.perf_counter()
            after = pss_mib(family(master))
        finally:
            os.kill(master, signal.SIGTERM)
    return {"services": services, "nginx_t_s": round(checked - start, 3), "hup_to_served_s": round(served - checked, 3),
            "pss_before_mib": round(before, 1), "pss_peak_mib": round(peak, 1), "pss_after_mib": round(after, 1)}


def main() -> int:
    for size in [int(a) for a in sys.argv[1:]] or [1000, 10000]:
        print(json.dumps(measure(size)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 17, goal 3 with stock nginx: what stands in the way of a flat cost per request at 10,000
services, measured on the two layouts stock nginx allows, beside `LuaBalancer`.

* `shared` (swarmgate's render from 100 plain hosts on; `SharedServerFrom = 1` here at every size):
  hosts that need nothing of their own are names of one server whose `map` picks the pool,
  `proxy_pass http://$swarmgate_pool`. nginx then finds the `upstream` block by name on every
  request, walking the list of all of them
  (`ngx_http_upstream_init_request`), and while parsing it checks every new block against all
  earlier ones (`ngx_http_upstream_add`): a cost per request that grows with the pools, and an
  `nginx -t` that grows with their square.
* `own-servers` (Interlock's layout): every host a `server` block of its own whose location names
  its pool (`proxy_pass http://POOL`): nginx binds the pool while parsing and finds the server by a
  hash of the name, but every server and location holds a copy of every module's settings. This is
  swarmgate's render with `SharedServerFrom = 0` (the default layout below 100 plain hosts).
* `lua` (`LuaBalancer = true`): one `upstream` whose balancer reads the pool's peers from a map.

Measures, exact where the machine is noisy: nginx's instructions per request (callgrind, as in
bench/render_ablation.py) for the demo route from a 1-service and a 10,000-service render; `nginx -t`
CPU seconds (median of 3) at 1,000 and 10,000 services and its peak RSS. Results:
bench/stock-layouts.md and .json.

    python bench/stock_layouts.py [--requests 2000] [--only shared own-servers lua]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer_configs as pc  # noqa: E402
from bench import peers  # noqa: E402
from bench.render_ablation import instructions  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests.support import free_port  # noqa: E402

OUT = REPO / "bench" / "stock-layouts"
SIZES = (1, 1000, 10000)
# `SharedServerFrom` of each stock layout: the shared server from the first plain host, or never.
SHARED_FROM = {"shared": 1, "own-servers": 0, "lua": 1}
LAYOUTS = {
    "shared": "one shared server, `map $host` → pool, `proxy_pass http://$swarmgate_pool`",
    "own-servers": "a server block per host naming its pool (`proxy_pass http://POOL`), as Interlock renders",
    "lua": "`LuaBalancer = true`: one upstream, the pool's peers from a map",
}


def log(msg: str) -> None:
    print(f"[stock-layouts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def render(layout: str, services: int, backend: int, work: Path) -> str:
    seed = peers.SEED_TOML.read_text()
    config, state = work / f"{layout}-{services}.toml", work / f"{layout}-{services}.state.json"
    marker = "[Extensions.default.Config]"
    config.write_text(pc.seed_toml(seed, lua_balancer=layout == "lua").replace(
        marker, f"{marker}\n      SharedServerFrom = {SHARED_FROM[layout]}", 1))
    state.write_text(json.dumps(pc.state_document(services, backend)))
    proc = subprocess.run([sys.executable, "-m", "swarmgate", "render", "-c", str(config), "--state", str(state)],
                          capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    state.unlink()
    if proc.returncode != 0:
        raise SystemExit(f"render of {layout} at {services} failed: {proc.stderr.strip()}")
    return proc.stdout


def nginx_t(conf: Path) -> dict[str, float]:
    """Median CPU seconds (user + system, from rusage) and peak RSS (GNU time's: nginx's own, not what
    the forked Python held before exec) of `nginx -t`."""
    cpu, rss = [], []
    peak = conf.parent / "time.out"
    for _ in range(3):
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(peak), "nginx", "-t", "-q", "-p",
                                 str(conf.parent), "-e", "stderr", "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.stderr.read().decode() if proc.stderr else ""
        _, status, usage = os.wait4(proc.pid, 0)  # time's usage includes the nginx it waited for
        if status != 0:
            raise SystemExit(f"nginx -t rejected {conf}: {err.strip()}")
        cpu.append(usage.ru_utime + usage.ru_stime)
        rss.append(int(peak.read_text().split()[-1]) / 1024)
    return {"cpu_s": round(statistics.median(cpu), 3), "max_rss_mib": round(statistics.median(rss), 1)}


def run(layouts: list[str], requests: int) -> dict[str, Any]:
    user = pwd.getpwuid(os.geteuid()).pw_name
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": peers.commit(),
                               "machine": peers.machine(), "callgrind_requests": requests, "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="swarmgate-layouts-") as tmp, peers.servers() as started:
        work = Path(tmp)
        backend = peers.start_backend(work, started)
        tls = peers.throwaway_tls(work)
        for layout in layouts:
            row: dict[str, Any] = {"what": LAYOUTS[layout], "sizes": {}}
            for services in SIZES:
                log(f"{layout}: rendering {services:,} service(s)")
                prefix = work / f"{layout}-{services}"
                (prefix / "logs").mkdir(parents=True)
                port = free_port()
                conf = prefix / "nginx.conf"
                conf.write_text(pc.loopback_rewrite(render(layout, services, backend, work),
                                                    ports={80: port, 443: free_port()}, prefix=prefix, tls=tls,
                                                    user=user))
                size: dict[str, Any] = {"config_bytes": conf.stat().st_size}
                if services > 1:
                    size.update(nginx_t(conf))
                if services != 1000:
                    counted = instructions(conf, port, requests, pipe=True, startup_s=900)
                    size["instructions_per_request"] = round(counted)
                row["sizes"][str(services)] = size
                log(f"{layout} at {services:,}: {size}")
            results["layouts"][layout] = row
    return results


def _ratio(a: float | None, b: float | None) -> str:
    return "" if a is None or not b else f"{a / b:.2f}"


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = ["# Issue 17, goal 3, with stock nginx: the layouts measured", "",
             f"Generated by `bench/stock_layouts.py` on {r['date']}, commit {r['commit']}; {m['nproc']} CPUs, "
             f"{m['nginx']}. The seed's config over bench/peer_configs.py's Swarm (demo.local on a loopback "
             "backend, the other services 3 tasks each); each layout rendered by `swarmgate render` at 1, 1,000 "
             f"and 10,000 services. `instructions/req`: nginx's own for `GET /` to demo.local (callgrind over "
             f"{r['callgrind_requests']:,} requests: exact, the same on a busy machine). `nginx -t`: CPU seconds, "
             "median of 3, and peak RSS. Goal 3: 10k ÷ 1 throughput ≥ 0.9 (here instructions: ≤ 1.11), "
             "`nginx -t` 10k ÷ 1k ≤ 12, ≤ 160 MiB.", "",
             "| layout | instructions/req, 1 service | at 10k | 10k ÷ 1 | `nginx -t` at 1k | at 10k | 10k ÷ 1k "
             "| peak RSS at 10k |", "|---|---|---|---|---|---|---|---|"]
    for name, row in r["layouts"].items():
        one, k1, k10 = (row["sizes"].get(s, {}) for s in ("1", "1000", "10000"))
        i1, i10 = one.get("instructions_per_request"), k10.get("instructions_per_request")
        lines.append(f"| `{name}`: {row['what']} | {i1:,} | {i10:,} | {_ratio(i10, i1)} | {k1.get('cpu_s')} s | "
                     f"{k10.get('cpu_s')} s | {_ratio(k10.get('cpu_s'), k1.get('cpu_s'))} | "
                     f"{k10.get('max_rss_mib')} MiB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests counted under callgrind")
    parser.add_argument("--only", nargs="+", choices=list(LAYOUTS), help="these layouts (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    print(write_report(args.out, run(args.only or list(LAYOUTS), args.requests), markdown), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

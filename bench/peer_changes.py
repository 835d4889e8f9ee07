"""A backend-only change (a task replaced), through the real agent on loopback: with `LuaBalancer`, applied
without a reload; without it, with one. What each costs at a given number of services.

The proxy is the agent test harness's (tests/unit/test_agent.py: the real agent.sh under busybox, the
machine's nginx, pushes signed with a channel key), serving swarmgate's render of N services (the
seed's configuration, 3 tasks each, as `make bench`), in which `demo.local`'s one task alternates
between two loopback backends, `a` and `b`, as a roll would move it. For each change it times the PUT
of the signed config until `demo.local` answers from the new backend, and records whether nginx
reloaded (a new set of worker processes) and the proxy's memory (master and workers, RSS) after it.

    python bench/peer_changes.py [--services 10000] [--changes 5] [--out bench/peer-changes]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import peer_configs as pc  # noqa: E402
from bench.peers import commit, machine, nginx_argv, start  # noqa: E402
from bench.wrkclient import proc_stats  # noqa: E402
from swarmgate.models.routing.routes import build_route_table  # noqa: E402
from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.models.swarm.observed import ObservedState  # noqa: E402
from swarmgate.renderers.nginx import render_nginx  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402
from tests.unit.test_agent import Proxy, _worker_user, digest_of  # noqa: E402

INFO = "swarmgate/0.1.0 linux/amd64"


def rendered(proxy: Proxy, *, services: int, backend: int, lua: bool) -> str:
    """The proxy config for `services` services with demo.local's task at 127.0.0.1:`backend`, as this
    proxy runs it: its ports on loopback, its control directory, the harness's worker user and pid."""
    toml = pc.seed_toml((REPO / "lab" / "seed-config.toml").read_text(), lua_balancer=lua)
    ext = parse_config(toml, source="lab/seed-config.toml").extensions["default"]
    observed = ObservedState.from_api(**pc.state_document(services, backend))
    text = render_nginx(ext, build_route_table(observed, ext), server_info=INFO, control_dir=str(proxy.dir)).text
    text = re.sub(r"^(\s*)listen 80\b", rf"\1listen 127.0.0.1:{proxy.port}", text, flags=re.M)
    text = re.sub(r"^(\s*)listen 443\b", rf"\1listen 127.0.0.1:{proxy.ssl_port}", text, flags=re.M)
    text = re.sub(r"^user \S+;", f"user {_worker_user()};", text, flags=re.M)
    text = re.sub(r"^pid \S+;", f"pid {proxy.tmp}/nginx.pid;", text, flags=re.M)
    # The harness's temp folders (the proxy image has Debian's /var/lib/nginx; this machine's is root's).
    temp = " ".join(f"{kind}_temp_path {proxy.tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                         "scgi"))
    text = text.replace("\nhttp {\n", f"\nhttp {{\n    {temp}\n", 1)
    if lua:  # the workers find the agent's peers file where this harness's agent writes it
        text = text.replace("\nuser ", "\nenv SWARMGATE_PEERS_FILE;\nuser ", 1)
    return text


def nginx_processes(master: int) -> dict[int, int]:
    """pid → RSS (KiB) of the nginx master and its children."""
    out: dict[int, int] = {}
    for pid, text in proc_stats():
        try:
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            if pid == master or ppid == master:
                rss = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
                out[pid] = int(rss.group(1)) if rss else 0
        except (OSError, ValueError, IndexError):
            continue
    return out


def answer(port: int) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": pc.DEMO_HOST})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return str(resp.read().decode().strip())
    except OSError:
        return ""


def run_mode(work: Path, *, lua: bool, services: int, changes: int) -> dict[str, Any]:
    a, b = free_port(), free_port()
    (work / "backends.conf").write_text(
        f"worker_processes 1;\npid {work}/backends.pid;\nerror_log {work}/backends.log;\nevents {{}}\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{a}; return 200 \"a\\n\"; }}\n"
        f"server {{ listen 127.0.0.1:{b}; return 200 \"b\\n\"; }} }}\n")
    mode = work / ("balancer" if lua else "stock")
    proxy = Proxy(mode, free_port(), free_port(), env={"SWARMGATE_PEERS_FILE": str(mode / "peers")})
    proxy.tmp.mkdir(mode=0o755)
    texts = {name: rendered(proxy, services=services, backend=port, lua=lua) for name, port in (("a", a), ("b", b))}
    rows: list[dict[str, Any]] = []
    backends = start("backends", nginx_argv(work, work / "backends.conf"), work)  # stopped below, whatever happens
    try:
        proxy.start_agent()
        wait_for(lambda: proxy.get() == (503, "bootstrap"), timeout=30, what="the bootstrap")
        seq = 1
        proxy.put(proxy.signed(texts["a"], term=1, seq=seq))
        assert proxy.status().serving == digest_of(texts["a"]), proxy.status().message
        wait_for(lambda: answer(proxy.port) == "a" or None, timeout=30, what="backend a")
        for i in range(changes):
            want = "b" if i % 2 == 0 else "a"
            master = proxy.master_pid()
            before = nginx_processes(master)
            seq += 1
            began = time.perf_counter()
            proxy.put(proxy.signed(texts[want], term=1, seq=seq))
            wait_for(lambda want=want: answer(proxy.port) == want or None, timeout=60, interval=0.02,  # type: ignore[misc]
                     what=f"backend {want}")
            seconds = time.perf_counter() - began
            time.sleep(1.0)  # old workers (none here: no open connections) have gone
            after = nginx_processes(proxy.master_pid())
            workers_before = set(before) - {master}
            rows.append({"change": i + 1, "seconds": round(seconds, 3),
                         "reloaded": not workers_before or not workers_before & set(after),
                         "processes": len(after), "rss_mib": round(sum(after.values()) / 1024, 1)})
            print(f"{'lua' if lua else 'stock'} change {i + 1}: {seconds:.3f} s, reloaded {rows[-1]['reloaded']}, "
                  f"{len(after)} processes, {rows[-1]['rss_mib']} MiB", file=sys.stderr, flush=True)
        peers_only = proxy.log().count("peers only, no reload")
    finally:
        proxy.kill()
        backends.stop()
    return {"lua_balancer": lua, "services": services, "changes": rows, "peers_only_pushes": peers_only,
            "seconds_median": round(statistics.median(r["seconds"] for r in rows), 3),
            "reloads": sum(1 for r in rows if r["reloaded"]),
            "rss_mib_last": rows[-1]["rss_mib"] if rows else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "peer-changes")
    args = parser.parse_args()
    for tool in ("nginx", "busybox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: scripts/install-deps.sh")
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
                               "machine": machine(), "modes": []}
    with tempfile.TemporaryDirectory(prefix="swarmgate-peer-changes-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)  # nginx's unprivileged workers traverse it
        for lua in (True, False):
            results["modes"].append(run_mode(Path(tmp), lua=lua, services=args.services, changes=args.changes))
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# A task replaced, through the agent on loopback ({results['date']}, commit {results['commit']})", "",
             f"swarmgate's render of {args.services:,} services; `demo.local`'s task moves between two backends "
             f"{args.changes} times (`bench/peer_changes.py`).", "",
             "| LuaBalancer | change | push → new task answers | nginx reloaded | nginx processes after | RSS after |",
             "|---|---|---|---|---|---|"]
    for mode in results["modes"]:
        for r in mode["changes"]:
            lines.append(f"| {'on' if mode['lua_balancer'] else 'off'} | {r['change']} | {r['seconds']:.3f} s | "
                         f"{'yes' if r['reloaded'] else 'no'} | {r['processes']} | {r['rss_mib']} MiB |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

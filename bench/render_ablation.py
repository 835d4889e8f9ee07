"""Where swarmgate's render spends its time against a minimal nginx proxy: the default render beside
the same render with one thing changed at a time, on loopback (no lab).

Every variant is swarmgate's render of the seed's configuration (bench/peers.py's `swarmgate` target:
`python -m swarmgate render`, then `loopback_rewrite`, its logs to a pipe another process reads, as
Docker reads the proxy task's), with one change: a configuration key where one exists (the render of
that configuration), else one edit of the rendered text. Three measures of each, all per request:

* `wrk` side by side (bench/peers.py's `measure`: rounds, rotating order, medians): req/s and p99 as
  ratios to the minimal nginx proxy, and the CPU the variant's nginx used per request;
* instructions in nginx's worker (valgrind's callgrind, `master_process off`, the instruction count
  of N requests minus that of 200): exact and the same on a busy machine, but user space only;
* system calls (`strace -c` on the worker during a 2 s `wrk` run): the kernel's part, counted.

Results: bench/render-ablation.md and .json.

    python bench/render_ablation.py [--rounds 5] [--seconds 3] [--requests 2000] [--only VARIANT ...]
"""

from __future__ import annotations

import argparse
import http.client
import os
import pwd
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer_configs as pc  # noqa: E402
from bench import peers  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402

OUT = REPO / "bench" / "render-ablation"
Edit = Callable[[str], str]


def _edit(pattern: str, replacement: str) -> Edit:
    def apply(text: str) -> str:
        out, n = re.subn(pattern, replacement, text, flags=re.M)
        if not n:
            raise SystemExit(f"the render has no {pattern!r}: the variant needs updating")
        return out

    return apply


# name -> (what it is, configuration keys added, an edit of the rendered text or None, stdout a pipe)
VARIANTS: dict[str, tuple[str, tuple[str, ...], Edit | None, bool]] = {
    "default": ("swarmgate's render as it is (the access log in 4k chunks, flushed every second)", (), None, True),
    "log-unbuffered": ("`AccessLogBuffer = \"0\"`: a write to the pipe per request (the default before)",
                       ('AccessLogBuffer = "0"',), None, True),
    "log-unbuffered-devnull": ("the same, its stdout /dev/null (what this bench did before)",
                               ('AccessLogBuffer = "0"',), None, False),
    "no-access-log": ("`access_log off`", (), _edit(r"access_log /dev/stdout main[^;]*;", "access_log off;"), True),
    "no-info-headers": ("`HideInfoHeaders = true`: none of Interlock's five `x-*` response headers",
                        ("HideInfoHeaders = true",), None, True),
    "no-request-id": ("`RequestIDs = false`: no `x-request-id` (request or response) and no map: nginx draws no "
                      "random id", ("RequestIDs = false",), None, True),
    "no-forwarded-headers": ("no `X-Real-IP`, `X-Forwarded-For`, `X-Forwarded-Proto` to the backend", (),
                             _edit(r"^\s*proxy_set_header (X-Real-IP|X-Forwarded-For|X-Forwarded-Proto) .*\n", ""),
                             True),
    "shared-server": ("`SharedServerFrom = 1`: the host a name of the shared server (`map`, `if`, "
                      "`proxy_pass http://$swarmgate_pool`), the default from 100 plain hosts on",
                      ("SharedServerFrom = 1",), None, True),
    "no-proxy-buffering": ("`proxy_buffering off`", (),
                           _edit(r"^(\s*)proxy_http_version 1.1;",
                                 r"\1proxy_http_version 1.1;\n\1proxy_buffering off;"),
                           True),
    "keepalive-64": ("`UpstreamKeepalive = 64`", ("UpstreamKeepalive = 64",), None, True),
    "lean": ("Interlock's per-request extras off (bench/peer_configs.py's `LEAN`: `RequestIDs = false`, "
             "`HideInfoHeaders = true`, `TrafficMetrics = false`)", pc.LEAN, None, True),
}


def log(msg: str) -> None:
    print(f"[ablation {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def variant_conf(name: str, work: Path, backend: int, port: int, tls: tuple[Path, Path]) -> Path:
    _, keys, edit, _ = VARIANTS[name]
    seed = peers.SEED_TOML.read_text()
    marker = "[Extensions.default.Config]"
    toml = seed.replace(marker, marker + "".join(f"\n      {k}" for k in keys), 1)
    prefix = work / name
    (prefix / "logs").mkdir(parents=True)
    text = peers.render(toml, pc.state_document(1, backend), work, name)
    text = pc.loopback_rewrite(text, ports={80: port, 443: peers.two_ports()[1]}, prefix=prefix, tls=tls,
                               user=pwd.getpwuid(os.geteuid()).pw_name)
    conf = prefix / "nginx.conf"
    conf.write_text(edit(text) if edit else text)
    return conf


def _get(port: int, conns: list[http.client.HTTPConnection], i: int) -> None:
    conn = conns[i % len(conns)]
    conn.request("GET", "/", headers={"Host": pc.DEMO_HOST})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"127.0.0.1:{port} answered {resp.status}")


def instructions(conf: Path, port: int, requests: int, *, pipe: bool, startup_s: float = 60) -> float:
    """nginx's instructions per request (callgrind): N+200 requests minus 200, so start-up and exit cancel.
    `startup_s`: how long nginx may take to answer under valgrind (a 10,000-service config parses for minutes)."""
    totals = []
    for n in (200, 200 + requests):
        out = conf.parent / f"callgrind.{n}"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "nginx", "-p", str(conf.parent),
                "-e", "stderr", "-c", str(conf), "-g", "daemon off; master_process off;"]
        server = peers.start(f"{conf.parent.name}-callgrind", argv, conf.parent, stdout_pipe=pipe)
        try:
            wait_for(lambda: peers.answers(port), timeout=startup_s, interval=0.3, what="nginx under valgrind")
            conns = [http.client.HTTPConnection(pc.LOOPBACK, port, timeout=30) for _ in range(4)]
            for i in range(n - 1):
                _get(port, conns, i)
            for c in conns:
                c.close()
        finally:
            server.stop()
        found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if found is None:
            raise SystemExit(f"no callgrind totals in {out}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / requests


def syscalls(worker: int, port: int) -> dict[str, float]:
    """System calls per request of one worker over a 2 s wrk run (strace -c)."""
    out = Path(tempfile.mktemp(prefix="ablation-strace-"))
    tracer = subprocess.Popen(["strace", "-c", "-p", str(worker), "-o", str(out)], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        run = subprocess.run(["wrk", "-t1", "-c16", "-d2s", "-H", f"Host: {pc.DEMO_HOST}",
                              f"http://{pc.LOOPBACK}:{port}/"], capture_output=True, text=True, timeout=60, check=True)
        time.sleep(0.3)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    done = int(re.search(r"(\d+) requests in", run.stdout).group(1))  # type: ignore[union-attr]
    calls: dict[str, float] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = round(int(parts[3]) / max(done, 1), 2)
    out.unlink()
    return {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v >= 0.01}


def run(names: list[str], rounds: int, seconds: int, requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": peers.commit(),
                               "machine": peers.machine(), "rounds": rounds, "seconds": seconds,
                               "callgrind_requests": requests,
                               "variants": {n: VARIANTS[n][0] for n in names}}
    with tempfile.TemporaryDirectory(prefix="swarmgate-ablation-") as tmp, peers.servers() as started:
        work = Path(tmp)
        backend = peers.start_backend(work, started)
        ports = {"direct": backend}
        port = free_port()
        (work / "minimal.conf").write_text(pc.minimal_nginx_conf(port, backend, work))
        started.append(peers.start(peers.BASELINE, peers.nginx_argv(work, work / "minimal.conf"), work))
        peers.wait_ready(started[-1], port)
        ports[peers.BASELINE] = port
        tls = peers.throwaway_tls(work)
        confs: dict[str, Path] = {}
        for name in names:
            port = free_port()
            confs[name] = variant_conf(name, work, backend, port, tls)
            started.append(peers.start(name, peers.nginx_argv(confs[name].parent, confs[name]), work,
                                       stdout_pipe=VARIANTS[name][3]))
            peers.wait_ready(started[-1], port)
            ports[name] = port
        procs = {s.name: {s.proc.pid, *peers._children(s.proc.pid)} for s in started}
        own = {pid for pids in procs.values() for pid in pids} | {s.reader.pid for s in started if s.reader}
        runs = peers.measure(ports, rounds, seconds, own, procs)
        results["runs"] = [asdict(r) for r in runs]
        results["summary"] = peers.summarize(runs, list(ports))
        calls = {}
        for s in started:
            if s.name != "direct":
                calls[s.name] = syscalls(peers._children(s.proc.pid)[0], ports[s.name])
                log(f"{s.name}: {calls[s.name]}")
        results["syscalls"] = calls
    counts: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="swarmgate-ablation-cg-") as tmp, peers.servers() as started:
        work = Path(tmp)
        backend = peers.start_backend(work, started)
        tls = peers.throwaway_tls(work)
        for name in [peers.BASELINE, *names]:
            port = free_port()
            if name == peers.BASELINE:
                (work / name / "logs").mkdir(parents=True)
                conf = work / name / "nginx.conf"
                conf.write_text(pc.minimal_nginx_conf(port, backend, conf.parent))
            else:
                conf = variant_conf(name, work, backend, port, tls)
            counts[name] = round(instructions(conf, port, requests, pipe=True), 0)
            log(f"{name}: {counts[name]:,.0f} instructions per request")
    results["instructions"] = counts
    return results


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    base_ins = r["instructions"].get(peers.BASELINE)
    lines = ["# Where the render's time goes", "",
             f"Generated by `bench/render_ablation.py` on {r['date']}, commit {r['commit']}; {m['nproc']} CPUs, "
             f"{m['nginx']}, {m['wrk']}. swarmgate's render of the seed's config (1 service) on loopback, its "
             "logs to a pipe another process reads (as Docker reads the proxy task's), beside the same render "
             f"with one thing changed at a time. `wrk` as in bench/peers.py: medians over {r['rounds']} rounds of "
             f"{r['seconds']} s, ratios to the minimal nginx proxy; `CPU/req`: the variant's nginx processes. "
             f"`instructions/req`: nginx's own (user space), from callgrind over {r['callgrind_requests']:,} "
             "requests: the same on a busy machine. `syscalls/req`: `strace -c` on the worker.", "",
             "| variant | req/s x minimal | p99 x minimal | CPU/req | x minimal | instructions/req | x minimal | "
             "syscalls/req |", "|---|---|---|---|---|---|---|---|"]
    for row in r["summary"]:
        name = row["target"]
        if name == "direct":
            continue
        what = r["variants"].get(name, "a minimal nginx proxy (`keepalive 64`, no access log)")
        ins = r["instructions"].get(name)
        calls = r["syscalls"].get(name, {})
        lines.append(f"| `{name}`: {what} | {peers._x(row['rps_ratio'])} | {peers._x(row['p99_ratio'])} | "
                     f"{row['proxy_us']:.1f} µs | {peers._x(row['proxy_us_ratio'])} | "
                     f"{'' if ins is None else f'{ins:,.0f}'} | "
                     f"{'' if ins is None or not base_ins else f'{ins / base_ins:.2f}'} | "
                     f"{sum(calls.values()):.1f} ({', '.join(f'{k} {v:g}' for k, v in calls.items())}) |")
    others = [row["others_cores"] for row in r["summary"]]
    lines += ["", f"The rest of the machine used {statistics.median(others):.2f} of its {m['nproc']} cores "
              f"(median over targets, highest {max(others):.2f}) during the wrk runs."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="requests counted under callgrind")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="these variants (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    results = run(args.only or list(VARIANTS), args.rounds, args.seconds, args.requests)
    print(write_report(args.out, results, markdown), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

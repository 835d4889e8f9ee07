"""`make dataplane`: the proxy's data-plane overhead, against its peers on loopback, then on the lab.

First (unless `--no-peers`) bench/peers.py: swarmgate's rendered config in the machine's nginx beside
a minimal nginx proxy, HAProxy and Caddy, all on 127.0.0.1 in front of one nginx backend, with the
data-plane goals checked; no lab needed (`--no-lab` stops there). Its options take a `peer-` prefix
here (`--peer-rounds`, `--peer-seconds`, `--peer-only`, `--peer-no-nginx-t`). Then the lab part:

Requests/s and latency (p50, p99) for `GET /ping` with `Host: demo.local`, from one client (`wrk`),
at a few concurrency levels, to

* `direct`: the demo task itself, at its node address and the host port Swarm published for it;
* `proxy <lb>`: every LB node's proxy on port 80, which routes to that same task.

Each measurement is done twice: with a new TCP connection per request (`Connection: close`) and
with keep-alive connections. Direct and proxied runs alternate within each round (the order rotates
from round to round) and every figure is the median over the rounds, so the machine's noise hits
both sides alike. Beside each run it records the CPU the client used (`wrk`'s user + system time,
from the kernel's child accounting) and how idle the whole machine was, which says whether the
client or the machine, rather than the proxy, set the ceiling.

With `--variants`, it also runs the proxy's rendered nginx.conf (copied out of the proxy task) on
this host, listening on 127.0.0.1 and proxying to the same demo task, as rendered and with one
change each (upstream keep-alive, no access log, two workers), all with the same client, to show
what a template change would buy. Those runs are an experiment beside the lab's proxy, not the
lab's proxy itself.

It reuses the seed deployment when it is converged, else deploys it (`scripts/demo.sh up`) and
removes it again at the end (`--keep` leaves it). Only lab node addresses and 127.0.0.1 are sent
requests. On a shared lab run it under the lab lock:

    flock /tmp/swarmgate-lab.lock make dataplane
    .venv/bin/python bench/dataplane.py [--levels 1 8 32] [--rounds 3] [--seconds 5] [--variants]
                                        [--no-peers | --no-lab] [--peer-rounds 5] [--peer-seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import peers  # noqa: E402
from bench.wrkclient import run_wrk  # noqa: E402
from tests.lab import http  # noqa: E402
from tests.lab.cluster import load_lab  # noqa: E402
from tests.lab.seed_deployment import DEMO_HOST, PROXY, Seed  # noqa: E402
from tests.support import host_port, wait_for  # noqa: E402

PATH = "/ping"
MODES = ("close", "keepalive")
MODE_TEXT = {"close": "a new connection per request (`Connection: close`)", "keepalive": "keep-alive connections"}


@dataclass(frozen=True)
class Target:
    name: str  # "direct", "proxy lb-00", "local as rendered", ...
    address: str
    port: int
    kind: str  # "direct", "proxy" or "local"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}{PATH}"


@dataclass(frozen=True)
class Run:
    target: str
    mode: str
    connections: int
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors (connect, read, write, timeout) and answers that were not 2xx/3xx
    client_cpu: float  # wrk's CPU seconds per wall second (1.0 = one core)
    host_idle: float  # share of all cores idle during the run
    cpu_by: dict[str, float]  # the busiest process names: CPU seconds per wall second, over the machine


def log(msg: str) -> None:
    print(f"[dataplane {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the client


def wrk(target: Target, mode: str, connections: int, seconds: int, round_: int = 0) -> Run:
    if target.kind != "local":
        http.assert_lab_route(target.address)  # never anything but a lab node or loopback
    threads = min(2, connections)  # the machine has 2 cores; wrk needs a connection per thread
    cmd = ["wrk", "--latency", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
           "-H", f"Host: {DEMO_HOST}"]
    if mode == "close":
        cmd += ["-H", "Connection: close"]  # wrk opens a new connection for each request
    cmd.append(target.url)
    m = run_wrk(cmd, timeout=seconds + 30)
    return Run(target=target.name, mode=mode, connections=connections, round=round_, requests=m.requests,
               seconds=m.seconds, rps=m.rps, p50_ms=m.p50_ms, p99_ms=m.p99_ms, errors=m.errors,
               client_cpu=m.client_cpu, host_idle=m.host_idle, cpu_by=m.cpu_by)


def measure(targets: list[Target], levels: list[int], rounds: int, seconds: int) -> list[Run]:
    """Every (mode, level) runs each target once per round, side by side; the order rotates."""
    runs: list[Run] = []
    for t in targets:  # warm-up: every path served once under load, not recorded
        wrk(t, "keepalive", 2, 1)
    for r in range(rounds):
        for mode in MODES:
            for level in levels:
                shift = (r + level) % len(targets)
                for t in targets[shift:] + targets[:shift]:
                    run = wrk(t, mode, level, seconds, r)
                    runs.append(run)
                    log(f"round {r + 1}/{rounds} {mode:9} c={level:<3} {t.name:22} {run.rps:9.0f} req/s "
                        f"p50 {run.p50_ms:7.2f} ms p99 {run.p99_ms:7.2f} ms errors {run.errors} "
                        f"wrk cpu {run.client_cpu:.2f} host idle {run.host_idle:.0%}")
    return runs


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """Medians per (target, mode, level), in first-seen order."""
    keys: list[tuple[str, str, int]] = []
    for run in runs:
        key = (run.target, run.mode, run.connections)
        if key not in keys:
            keys.append(key)
    rows = []
    for target, mode, level in keys:
        rs = [r for r in runs if (r.target, r.mode, r.connections) == (target, mode, level)]
        rows.append({"target": target, "mode": mode, "connections": level, "rounds": len(rs),
                     "rps": round(statistics.median(r.rps for r in rs), 1),
                     "p50_ms": round(statistics.median(r.p50_ms for r in rs), 3),
                     "p99_ms": round(statistics.median(r.p99_ms for r in rs), 3),
                     "errors": sum(r.errors for r in rs), "requests": sum(r.requests for r in rs),
                     "client_cpu": round(statistics.median(r.client_cpu for r in rs), 2),
                     "host_idle": round(statistics.median(r.host_idle for r in rs), 3),
                     "rps_all": [round(r.rps) for r in rs],
                     "cpu_by": _median_cpu_by([r.cpu_by for r in rs])})
    return rows


def _median_cpu_by(samples: list[dict[str, float]]) -> dict[str, float]:
    names = {n for s in samples for n in s}
    med = {n: round(statistics.median(s.get(n, 0.0) for s in samples), 2) for n in names}
    return dict(sorted(med.items(), key=lambda kv: -kv[1])[:6])


# -- the lab


def demo_backend(seed: Seed) -> tuple[str, str, int]:
    """(node name, node address, published host port) of the demo service's one running task."""
    tasks = seed.running_tasks("demo")
    if len(tasks) != 1:
        raise RuntimeError(f"expected one running demo task, found {len(tasks)}")
    task = tasks[0]
    node = seed.node_names()[task["NodeID"]]
    port = host_port(task, 8080)
    if port is None:
        raise RuntimeError(f"demo task {task['ID']} has no host-mode port for 8080 in its PortStatus")
    return node, seed.lab.address(node), port


def check_paths(targets: list[Target], upstream: str) -> None:
    """Every target answers 200 for demo.local, and every proxy sends it to the same task."""
    for t in targets:
        resp = http.get(t.address, PATH, port=t.port, host=DEMO_HOST, timeout=5)
        if resp.status != 200:
            raise RuntimeError(f"{t.name} ({t.url}) answered {resp.status}")
        if t.kind != "direct" and resp.headers.get("x-upstream-addr") != upstream:
            raise RuntimeError(f"{t.name} routed to {resp.headers.get('x-upstream-addr')}, not {upstream}")


def proxy_container(seed: Seed, node: str) -> str:
    return seed.container_on(node, PROXY)


def nginx_settings(seed: Seed, node: str) -> dict[str, str]:
    """The directives of the running proxy config that bear on the data plane."""
    text = seed.cli("exec", proxy_container(seed, node), "cat", "/etc/nginx/nginx.conf", node=node)
    found: dict[str, str] = {}
    for key in ("worker_processes", "access_log", "proxy_http_version", "keepalive_timeout"):
        m = re.search(rf"^\s*{key}\s+([^;]+);", text, re.M)
        found[key] = m.group(1) if m else "(not set)"
    found["upstream keepalive"] = "yes" if re.search(r"^\s*keepalive\s+\d+;", text, re.M) else "no"
    return found


# -- variants: the deployed config changed one way at a time, on one LB node's proxy


VARIANTS = ("upstream keepalive", "no access log", "two workers", "all three")


def variant_config(rendered: str, variant: str) -> str:
    """The proxy's rendered nginx.conf with one change (or all three)."""
    out = rendered
    if variant in ("upstream keepalive", "all three"):
        out = re.sub(r"^(\s*upstream\s+\S+\s*\{\n)", r"\1        keepalive 64;\n", out, flags=re.M)
        out = re.sub(r"^(\s*proxy_pass [^;]+;\n)", r'\1            proxy_set_header Connection "";\n', out, flags=re.M)
    if variant in ("no access log", "all three"):
        out = re.sub(r"^(\s*)access_log\s+\S+\s+main[^;]*;", r"\1access_log off;", out, flags=re.M)
    if variant in ("two workers", "all three"):
        out = re.sub(r"^worker_processes\s+\S+;", "worker_processes 2;", out, flags=re.M)
    if out == rendered:
        raise RuntimeError(f"variant {variant!r} changed nothing in the rendered config")
    return out


def install_config(seed: Seed, node: str, text: str) -> None:
    """Puts `text` in the proxy task's live config and reloads its nginx (`nginx -t` first), the way
    the agent applies a pushed config, but without the operator: the agent's status still names the
    operator's digest, so nothing re-pushes while routes stay unchanged (this run holds the lab)."""
    container = proxy_container(seed, node)
    script = ("cat > /etc/nginx/nginx.conf.dataplane && nginx -t -q -c /etc/nginx/nginx.conf.dataplane && "
              "mv /etc/nginx/nginx.conf.dataplane /etc/nginx/nginx.conf && kill -HUP $(cat /var/run/proxy.pid)")
    seed.cli("exec", "-i", container, "sh", "-c", script, node=node, stdin=text)
    time.sleep(2)  # the old workers finish; new ones serve


def measure_variants(seed: Seed, rendered: str, direct: Target, baseline: Target, node: str, levels: list[int],
                     rounds: int, seconds: int) -> dict[str, list[Run]]:
    """Per variant: direct, the first LB node's proxy as deployed and `node`'s proxy with the variant."""
    runs: dict[str, list[Run]] = {}
    try:
        for variant in VARIANTS:
            install_config(seed, node, variant_config(rendered, variant))
            target = Target(f"proxy {node}", seed.lab.address(node), 80, "proxy")
            check_paths([target], f"{direct.address}:{direct.port}")
            log(f"{node}'s proxy now runs its config with: {variant}")
            runs[variant] = measure([direct, baseline, target], levels, rounds, seconds)
    finally:
        install_config(seed, node, rendered)
        log(f"{node}'s proxy runs the operator's config again")
    return runs


# -- report


def ratio_rows(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    base = {(r["mode"], r["connections"]): r for r in rows if r["target"] == baseline}
    out = []
    for r in rows:
        b = base.get((r["mode"], r["connections"]))
        if r["target"] == baseline or b is None:
            continue
        out.append({"target": r["target"], "mode": r["mode"], "connections": r["connections"],
                    "ratio": round(r["rps"] / b["rps"], 3) if b["rps"] else None,
                    "p99_delta_ms": round(r["p99_ms"] - b["p99_ms"], 3)})
    return out


def write_report(results: dict[str, Any], out: Path) -> None:
    """OUT.json and OUT.md from the lab part's results; the peers' section (bench/peers.py), when the
    results or the JSON already there hold one, is kept as it is."""
    saved = out.with_suffix(".json")
    if "peers" not in results and saved.exists():
        earlier = json.loads(saved.read_text()).get("peers")
        if earlier is not None:
            results["peers"] = earlier
    saved.write_text(json.dumps(results, indent=2) + "\n")
    rows: list[dict[str, Any]] = results["summary"]
    ratios = {(r["target"], r["mode"], r["connections"]): r for r in results["ratios"]}
    lines = [f"# Data-plane overhead ({results['date']}, {results['machine']})", "",
             "Generated by `bench/dataplane.py` (`make dataplane`); every figure is a median over "
             f"{results['rounds']} rounds of {results['seconds']} s per run, direct and proxied runs alternating "
             "within each round. Client: `wrk` on the host, `GET /ping` with `Host: demo.local`. "
             f"Backend: the seed's `demo` task on {results['backend']['node']} "
             f"({results['backend']['address']}:{results['backend']['port']}); proxies: "
             + ", ".join(f"{n} ({a}:80)" for n, a in results["lb"].items()) + ".", "",
             "The running proxy config: " + ", ".join(f"`{k}` {v}" for k, v in results["nginx"].items()) + ".", ""]
    for mode in MODES:
        lines += [f"## {MODE_TEXT[mode][0].upper()}{MODE_TEXT[mode][1:]}", "",
                  "| connections | target | req/s | proxy / direct | p50 | p99 | p99 - direct | errors | wrk CPU | "
                  "host idle |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if r["mode"] != mode:
                continue
            ra = ratios.get((r["target"], mode, r["connections"]))
            ratio = f"**{ra['ratio']:.2f}x**" if ra and ra["ratio"] is not None else "1"
            delta = f"{ra['p99_delta_ms']:+.2f} ms" if ra else ""
            lines.append(f"| {r['connections']} | {r['target']} | {r['rps']:.0f} | {ratio} | {r['p50_ms']:.2f} ms | "
                         f"{r['p99_ms']:.2f} ms | {delta} | {r['errors']} of {r['requests']} | "
                         f"{r['client_cpu']:.2f} | {r['host_idle']:.0%} |")
        lines.append("")
    lines += ["## Where the CPU goes", "",
              "CPU seconds per wall second of the busiest process names on the whole machine (all 8 engines "
              "included; `demo` counts the per-connection children it forked and reaped), medians at the highest "
              "concurrency:", "", "| mode | target | busiest processes |", "|---|---|---|"]
    top = max(r["connections"] for r in rows)
    for r in rows:
        if r["connections"] == top:
            lines.append(f"| {r['mode']} | {r['target']} | "
                         + ", ".join(f"{n} {c:.2f}" for n, c in r["cpu_by"].items()) + " |")
    lines.append("")
    if results.get("variants"):
        node = results["variant_node"]
        first = next(iter(results["lb"]))
        lines += ["## The same proxy config, changed one way at a time (`--variants`)", "",
                  f"{node}'s proxy ran its rendered config with one change (installed in the task and reloaded "
                  f"with `nginx -t` + HUP, as the agent does), side by side with direct and with {first}'s proxy "
                  "as deployed; afterwards it got the operator's config back. The changes: `upstream keepalive` = "
                  "`keepalive 64;` in the upstream block plus `proxy_set_header Connection \"\";`; `no access log` "
                  "= `access_log off;` instead of `/dev/stdout` (the container's log, which Docker copies); "
                  "`two workers` = `worker_processes 2;`; `all three` together. Medians over "
                  f"{results['variant_rounds']} rounds of {results['variant_seconds']} s.", "",
                  f"| variant on {node} | mode | connections | direct req/s | {first} as deployed | {node} changed "
                  f"| p99 direct / {first} / {node} |", "|---|---|---|---|---|---|---|"]
        for variant, v in results["variants"].items():
            by = {(r["target"], r["mode"], r["connections"]): r for r in v["summary"]}
            ra = {(r["target"], r["mode"], r["connections"]): r["ratio"] for r in v["ratios"]}
            for mode in MODES:
                for level in sorted({r["connections"] for r in v["summary"]}):
                    d, a, b = (by[(t, mode, level)] for t in ("direct", f"proxy {first}", f"proxy {node}"))
                    lines.append(f"| {variant} | {mode} | {level} | {d['rps']:.0f} | {a['rps']:.0f} "
                                 f"({ra[(a['target'], mode, level)]:.2f}x) | **{b['rps']:.0f} "
                                 f"({ra[(b['target'], mode, level)]:.2f}x)** | {d['p99_ms']:.2f} / "
                                 f"{a['p99_ms']:.2f} / {b['p99_ms']:.2f} ms |")
        lines += ["", f"Busiest processes (CPU seconds per wall second, medians) while {node}'s changed proxy was "
                  "measured at the highest concurrency:", "", "| variant | mode | busiest processes |", "|---|---|---|"]
        for variant, v in results["variants"].items():
            top = max(r["connections"] for r in v["summary"])
            for r in v["summary"]:
                if r["target"] == f"proxy {node}" and r["connections"] == top:
                    lines.append(f"| {variant} | {r['mode']} | "
                                 + ", ".join(f"{n} {c:.2f}" for n, c in r["cpu_by"].items()) + " |")
        lines.append("")
    lines += ["`wrk CPU` is the client's CPU time per second of wall time (1.00 = one of the machine's "
              f"{os.cpu_count()} cores); `host idle` is the share of all cores left idle during the run. "
              "wrk starts its latency clock once a connection is open, so with a new connection per request "
              "the latencies leave out the client's TCP handshake (requests/s include it).", ""]
    if results.get("notes"):
        lines += ["## What limits the ratio", "", results["notes"].strip(), ""]
    text = "\n".join(lines)
    if results.get("peers"):
        text = peers.merge_markdown(text, peers.peers_markdown(results["peers"]))
    out.with_suffix(".md").write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent connections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--variants", action="store_true",
                        help="also run the last LB node's proxy with each config variant, beside the first's")
    parser.add_argument("--variant-levels", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--variant-rounds", type=int, default=2)
    parser.add_argument("--variant-seconds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave a seed this run deployed in place")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "dataplane", help="writes OUT.md and OUT.json")
    parser.add_argument("--notes", type=Path, help="a Markdown file to append as 'What limits the ratio'")
    parser.add_argument("--report-only", action="store_true",
                        help="no measurement: rewrite OUT.md from OUT.json (with --notes)")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers on loopback (bench/peers.py)")
    parser.add_argument("--no-lab", action="store_true", help="skip the lab part: only the peers on loopback")
    peers.add_arguments(parser, "peer-")
    args = parser.parse_args()
    if args.report_only:
        saved: dict[str, Any] = json.loads(args.out.with_suffix(".json").read_text())
        if args.notes:
            saved["notes"] = args.notes.read_text()
        if "summary" in saved:
            write_report(saved, args.out)
        elif "peers" in saved:
            peers.merge_report(args.out, saved["peers"])
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: make deps (scripts/install-deps.sh)")
    # The peers first: they need no lab, and each is stopped before the lab part starts.
    if not args.no_peers:
        found = peers.run(args.peer_rounds, args.peer_seconds, args.peer_only, time_nginx_t=not args.peer_no_nginx_t)
        peers.merge_report(args.out, found)
        peers.print_table(found)
    if args.no_lab:
        return 0

    lab = load_lab()
    seed = Seed(lab, log=log)
    deployed = False
    try:
        try:
            reuse = seed.converged()
        except Exception as exc:  # no seed deployed: the services are missing
            log(f"no converged seed ({type(exc).__name__}); deploying it")
            reuse = False
        if not reuse:
            seed.deploy()
            deployed = True
            wait_for(seed.converged, timeout=120, what="the seed converged")
        else:
            log("reusing the converged seed deployment")
        node, address, port = demo_backend(seed)
        direct = Target("direct", address, port, "direct")
        proxies = [Target(f"proxy {lb}", lab.address(lb), 80, "proxy") for lb in lab.lb_nodes]
        check_paths([direct, *proxies], f"{address}:{port}")
        log(f"backend: demo task on {node} at {address}:{port}; proxies: {', '.join(p.url for p in proxies)}")
        results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with the lab's {len(lab.nodes)} engines",
            "client": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.split("\n")[0],
            "rounds": args.rounds, "seconds": args.seconds, "levels": args.levels,
            "backend": {"node": node, "address": address, "port": port},
            "lb": {lb: lab.address(lb) for lb in lab.lb_nodes},
            "nginx": nginx_settings(seed, lab.lb_nodes[0]),
            "variant_rounds": args.variant_rounds, "variant_seconds": args.variant_seconds,
        }
        runs = measure([direct, *proxies], args.levels, args.rounds, args.seconds)
        results["runs"] = [asdict(r) for r in runs]
        results["summary"] = summarize(runs)
        results["ratios"] = ratio_rows(results["summary"], "direct")
        if args.variants:
            node = lab.lb_nodes[-1]
            rendered = seed.cli("exec", proxy_container(seed, node), "cat", "/etc/nginx/nginx.conf", node=node)
            vruns = measure_variants(seed, rendered, direct, proxies[0], node, args.variant_levels,
                                     args.variant_rounds, args.variant_seconds)
            results["variant_node"] = node
            results["variants"] = {}
            for variant, vr in vruns.items():
                summary = summarize(vr)
                results["variants"][variant] = {"runs": [asdict(r) for r in vr], "summary": summary,
                                                "ratios": ratio_rows(summary, "direct")}
        if args.notes:
            results["notes"] = args.notes.read_text()
        write_report(results, args.out)
        print(args.out.with_suffix(".md").read_text())
    finally:
        if deployed and not args.keep:
            seed.undeploy()
            log("seed removed (scripts/demo.sh down)")
        seed.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

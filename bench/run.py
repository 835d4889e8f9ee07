"""`make bench`: swarmgate's speed and hitlessness, measured side by side in one run.

Parts, all written to bench/results.json and summarised in bench/results.md:

* core:  one operator pass (Engine-API JSON parse, snapshot, desired state, plan, render) at 1,000
         and 10,000 routed services (3 tasks each, 50 nodes), each size in a fresh process
         (bench/core_pass.py) beside a plain `json.loads` of the same API responses; the process's
         memory holding the snapshot and desired state.
* nginx: `nginx -t` on the config rendered for those Swarms: seconds and peak memory (max RSS).
* lab:   on the real lab Swarm, (a) seconds from `create service` to the first 200 through every LB
         node, and (b) requests dropped while routes change, with hitless delivery and with plain
         Swarm-config rotation (`HitlessServiceUpdate = false`), under the same client load.

The machine is shared and noisy: figures are medians, and the comparison is within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.models.swarm.observed import ObservedState  # noqa: E402
from swarmgate.operator.planning.desired import compute_desired  # noqa: E402

CORE_TOML = """
EndpointOverride = "198.18.0.1:8080"
[Extensions.default]
  ProxyImage = "swarmgate/nginx:lab"
  PublishMode = "host"
"""
SIZES = (1000, 10000)


def bench_core(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        repeats = 5 if size <= 1000 else 3
        out = subprocess.run([sys.executable, str(REPO / "bench" / "core_pass.py"), str(size), str(repeats)],
                             check=True, capture_output=True, text=True, timeout=900)
        rows.append(json.loads(out.stdout))
        r = rows[-1]
        print(f"core: {size} services: pass {r['pass_s']} s (cold {r['cold_pass_s']} s), json.loads {r['parse_s']} s "
              f"(collector paused {r['parse_paused_s']} s), ratio {r['ratio']}, RSS +{r['rss_mib']} MiB", flush=True)
    return rows


def _nginx_t(text: str, repeats: int) -> dict[str, float]:
    """Median seconds and peak memory of `nginx -t` on `text` (checked as the operator's gate does)."""
    from swarmgate.renderers.validate import localized, nginx_binary

    binary = nginx_binary()
    if binary is None:
        raise SystemExit("nginx is not installed: make deps")
    seconds, peaks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        conf = prefix / "nginx.conf"
        conf.write_text(localized(text, prefix, None))
        for _ in range(repeats):
            start = time.perf_counter()
            # GNU time reports nginx's own peak: a child forked from this (large) process would
            # count the parent's pages until its exec.
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(prefix / "rss"), binary, "-t", "-q",
                                   "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True, timeout=600)
            seconds.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise SystemExit(f"nginx -t rejected the bench config: {proc.stderr.strip()}")
            peaks.append(int((prefix / "rss").read_text().split()[-1]) / 1024)
    return {"seconds": round(statistics.median(seconds), 3), "max_rss_mib": round(max(peaks), 1)}


def bench_nginx(sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    from bench.core_pass import api_responses

    config = parse_config(CORE_TOML, source="bench")
    rows = []
    for size in sizes:
        docs = {kind: json.loads(text) for kind, text in api_responses(size).items()}
        text = compute_desired(config, ObservedState.from_api(**docs)).extensions[0].rendered.text
        del docs
        row = {"services": size, "config_bytes": len(text), **_nginx_t(text, repeats=3)}
        rows.append(row)
        print(f"nginx -t: {size} services: {row['seconds']} s, {row['max_rss_mib']} MiB", flush=True)
    return rows


class Load:
    """A sequential client per LB node for one host; counts answers that are not 200."""

    def __init__(self, lab: Any, host: str) -> None:
        from tests.lab import http

        self.get = http.get
        self.lab, self.host = lab, host
        self.ok = self.failed = 0
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in lab.lb_nodes]

    def _run(self, node: str) -> None:
        address = self.lab.address(node)
        deadline = time.monotonic() + 900  # bounded even if nobody stops it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status = self.get(address, "/ping", host=self.host, timeout=2).status
                key = str(status)
            except OSError as exc:
                status, key = 0, type(exc).__name__
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.errors[key] = self.errors.get(key, 0) + 1
            time.sleep(0.01)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)


def bench_lab(changes: int, rounds: int) -> dict[str, Any]:
    from tests.lab.cluster import ensure_lab_up
    from tests.lab.operator_fixture import answers_everywhere, create_routed, operator, running_upstreams
    from tests.support import wait_for

    lab = ensure_lab_up()
    client = lab.manager_client()
    names = ("steady", *(f"churn-{i}" for i in range(max(changes, rounds))))
    out: dict[str, Any] = {"nodes": len(lab.nodes), "lb_nodes": len(lab.lb_nodes)}

    def routed(name: str) -> set[str]:
        up = wait_for(lambda: running_upstreams(client, name), timeout=90, what=f"{name} running")
        wait_for(lambda: answers_everywhere(lab, f"{name}.local", up), timeout=180, what=f"{name} routed")
        return up

    def labels(name: str) -> dict[str, str]:
        return {"com.docker.lb.hosts": f"{name}.local", "com.docker.lb.port": "8080"}

    with tempfile.TemporaryDirectory() as tmp:
        with operator(lab, Path(tmp), services=names) as _op:
            create_routed(client, "steady", labels("steady"))
            routed("steady")
            seconds = []
            for i in range(rounds):
                name = f"churn-{i}"
                start = time.monotonic()
                create_routed(client, name, labels(name))
                routed(name)
                seconds.append(time.monotonic() - start)
                client.services.get(name).remove()
            out["create_to_routed_s"] = {"median": round(statistics.median(seconds), 2),
                                         "all": [round(s, 2) for s in seconds]}
            print(f"lab: create → 200 on every LB: median {out['create_to_routed_s']['median']} s", flush=True)

        for mode, extra in (("hitless", ""), ("plain", "    HitlessServiceUpdate = false\n")):
            mode_dir = Path(tmp) / mode
            mode_dir.mkdir()
            with operator(lab, mode_dir, extension_extra=extra, services=names) as _op:
                create_routed(client, "steady", labels("steady"))
                routed("steady")
                started = time.monotonic()
                with Load(lab, "steady.local") as load:
                    for i in range(changes):
                        name = f"churn-{i}"
                        create_routed(client, name, labels(name))
                        routed(name)
                    time.sleep(2)
                out[mode] = {"route_changes": changes, "requests": load.ok + load.failed, "failed": load.failed,
                             "errors": load.errors, "seconds": round(time.monotonic() - started, 1)}
                print(f"lab: {mode}: {load.failed} of {load.ok + load.failed} requests failed "
                      f"during {changes} route changes", flush=True)
    client.close()
    return out


def bench_convergence(trials: int, quiet: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(REPO / "bench" / "convergence.py"), "--trials", str(trials),
                          "--quiet", str(quiet)], check=True, capture_output=True, text=True, timeout=3600)
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    print(f"convergence (quiet {quiet} s): " + ", ".join(f"{k} p50 {result[k]['p50']} s p95 {result[k]['p95']} s"
                                                        for k in ("new", "scale", "restart", "removal")), flush=True)
    return result


def write(results: dict[str, Any]) -> None:
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# swarmgate benchmark ({results['date']}, {results['machine']})", "",
             "One operator pass (Engine-API JSON parse, snapshot, desired state, plan, render; Python's cyclic",
             "collector paused, as the operator runs it) beside `json.loads` of the same API responses, in the",
             "same fresh process; medians. Warm: labels parsed in an earlier pass; cold: the first pass.", "",
             "| services (3 tasks, 50 nodes) | API JSON | json.loads | json.loads, collector paused | pass (warm) "
             "| pass (cold) | pass / json.loads | pass / paused json.loads | RSS held | process RSS (peak) "
             "| rendered config |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results.get("core", []):
        lines.append(f"| {r['services']} | {r['response_bytes'] / 2**20:.1f} MiB | {r['parse_s']} s | "
                     f"{r['parse_paused_s']} s | {r['pass_s']} s | {r['cold_pass_s']} s | {r['ratio']}x "
                     f"(cold {r['cold_ratio']}x) | {r['ratio_to_paused_parse']}x | {r['rss_mib']} MiB "
                     f"| {r['process_rss_mib']} MiB ({r['peak_rss_mib']} MiB) | {r['config_bytes']} bytes |")
    core = {r["services"]: r for r in results.get("core", [])}
    if 1000 in core and 10000 in core:
        lines += ["", f"10k / 1k pass time: {core[10000]['pass_s'] / core[1000]['pass_s']:.1f}x for 10x the services."]
    if results.get("nginx"):
        lines += ["", "| services | `nginx -t` | max RSS | config |", "|---|---|---|---|"]
        for r in results["nginx"]:
            lines.append(f"| {r['services']} | {r['seconds']} s | {r['max_rss_mib']} MiB | {r['config_bytes']} bytes |")
        ng = {r["services"]: r for r in results["nginx"]}
        if 1000 in ng and 10000 in ng:
            lines += ["", f"10k / 1k `nginx -t` time: {ng[10000]['seconds'] / ng[1000]['seconds']:.1f}x."]
    for conv in results.get("convergence", []):
        lines += ["", f"Convergence on the lab ({conv['lb_nodes']} LB nodes, PollInterval {conv['poll_interval']}, "
                  f"{conv['trials']} trials, {conv.get('quiet_before_kill', 0)} s quiet before each kill; "
                  "bench/convergence.py):", "",
                  "| from → to | p50 | p95 | max |", "|---|---|---|---|"]
        for kind, what in (("new", "new service: task running → served on every LB node"),
                           ("scale", "scale-up: new task running → served on every LB node"),
                           ("restart", "killed task: replacement running → served on every LB node"),
                           ("removal", "scale-down command → last request to the removed task")):
            k = conv.get(kind)
            if k is None:
                continue
            lines.append(f"| {what} | {k['p50']} s | {k['p95']} s | {k['max']} s |")
    if results.get("reload"):
        lines += ["", "A route change at the proxy (bench/reload.py: nginx on loopback, `nginx -t` then HUP, "
                  "as agent.sh applies a config; PSS of all nginx processes):", "",
                  "| services | `nginx -t` | HUP → new workers only | PSS before | PSS peak | PSS after |",
                  "|---|---|---|---|---|---|"]
        for r in results["reload"]:
            lines.append(f"| {r['services']} | {r['nginx_t_s']} s | {r['hup_to_served_s']} s "
                         f"| {r['pss_before_mib']} MiB | {r['pss_peak_mib']} MiB | {r['pss_after_mib']} MiB |")
    lab = results.get("lab")
    if lab:
        lines += ["", f"Lab: {lab['nodes']} nodes, {lab['lb_nodes']} LB nodes.", "",
                  f"- create service → 200 through every LB node: median {lab['create_to_routed_s']['median']} s "
                  f"(runs: {lab['create_to_routed_s']['all']})"]
        for mode in ("hitless", "plain"):
            m = lab[mode]
            lines.append(f"- {mode}: {m['failed']} of {m['requests']} requests failed during {m['route_changes']} "
                         f"route changes ({m['seconds']} s; errors {m['errors'] or 'none'})")
    (REPO / "bench" / "results.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-lab", action="store_true", help="only the pure core benchmark")
    parser.add_argument("--changes", type=int, default=5, help="route changes under load, per mode")
    parser.add_argument("--rounds", type=int, default=5, help="create→routed measurements")
    parser.add_argument("--trials", type=int, default=20, help="convergence trials per kind")
    args = parser.parse_args()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    results["core"] = bench_core(SIZES)
    results["nginx"] = bench_nginx(SIZES)
    reload = subprocess.run([sys.executable, str(REPO / "bench" / "reload.py"), *map(str, SIZES)], check=True,
                            capture_output=True, text=True, timeout=1800)
    results["reload"] = [json.loads(line) for line in reload.stdout.splitlines() if line.startswith("{")]
    if not args.no_lab:
        results["convergence"] = [bench_convergence(args.trials, quiet) for quiet in (0.0, 8.0)]
        results["lab"] = bench_lab(args.changes, args.rounds)
    write(results)
    print((REPO / "bench" / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

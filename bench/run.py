"""`make bench`: swarmgate's speed and hitlessness, measured side by side in one run.

Two parts, both written to bench/results.json and summarised in bench/results.md:

* core:  desired state + plan for synthetic Swarms of growing size (pure; median of repeats and
         peak memory from tracemalloc).
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
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.models.swarm.observed import ObservedState  # noqa: E402
from swarmgate.operator.planning.desired import compute_desired  # noqa: E402
from swarmgate.operator.planning.plan import plan  # noqa: E402
from tests import factories as f  # noqa: E402

CORE_TOML = """
EndpointOverride = "198.18.0.1:8080"
[Extensions.default]
  ProxyImage = "swarmgate/nginx:lab"
  PublishMode = "host"
"""


def synthetic(services: int, *, tasks_per_service: int = 3, nodes: int = 20) -> ObservedState:
    node_docs = [f.node(f"wrk-{i}", f"198.18.0.{10 + i}") for i in range(nodes)]
    svc_docs, task_docs = [], []
    for i in range(services):
        svc = f.service(f"app-{i}", {"com.docker.lb.hosts": f"app-{i}.example.test", "com.docker.lb.port": "8080"})
        svc_docs.append(svc)
        for slot in range(tasks_per_service):
            task_docs.append(f.task(svc, f"wrk-{(i + slot) % nodes}", slot=slot + 1,
                                    ports={8080: 30000 + (i * tasks_per_service + slot) % 30000}))
    return ObservedState.from_api(services=svc_docs, tasks=task_docs, nodes=node_docs)


def bench_core(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    config = parse_config(CORE_TOML, source="bench")
    rows = []
    for size in sizes:
        observed = synthetic(size)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            desired = compute_desired(config, observed)
            plan(desired, observed, published={})
            times.append(time.perf_counter() - start)
        tracemalloc.start()
        compute_desired(config, observed)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"services": size, "tasks": size * 3, "median_ms": round(statistics.median(times) * 1000, 2),
                     "min_ms": round(min(times) * 1000, 2), "peak_mib": round(peak / 2**20, 2),
                     "repeats": repeats, "config_bytes": len(desired.extensions[0].rendered.text)})
        print(f"core: {size} services: median {rows[-1]['median_ms']} ms, peak {rows[-1]['peak_mib']} MiB", flush=True)
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
    from tests.lab.conftest import ensure_lab_up
    from tests.lab.operator_fixture import answers_everywhere, create_routed, operator, running_upstreams, wait_for

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


def write(results: dict[str, Any]) -> None:
    (REPO / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# swarmgate benchmark ({results['date']}, {results['machine']})", "",
             "| services (3 tasks each) | desired+plan median | min | peak memory | rendered config |",
             "|---|---|---|---|---|"]
    for row in results.get("core", []):
        lines.append(f"| {row['services']} | {row['median_ms']} ms | {row['min_ms']} ms | {row['peak_mib']} MiB "
                     f"| {row['config_bytes']} bytes |")
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
    args = parser.parse_args()
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": f"{platform.machine()}, Python {platform.python_version()}"}
    results["core"] = bench_core([10, 100, 1000], repeats=7)
    if not args.no_lab:
        results["lab"] = bench_lab(args.changes, args.rounds)
    write(results)
    print((REPO / "bench" / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

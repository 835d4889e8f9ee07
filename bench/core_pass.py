"""One operator pass at a given Swarm size, in a fresh process (`python bench/core_pass.py N`).

The Swarm is N routed services of 3 tasks each on 50 nodes, written as the Engine API's own JSON
(`GET /services`, `/tasks`, `/nodes`: Docker 20.10 shapes, each host-mode port listed twice). The
process measures, side by side:

* parse:  `json.loads` of the three responses, nothing else, as any process does it (Python's cyclic
          garbage collector on, its default) and with the collector paused;
* pass:   what the operator's reconcile pass does with the same responses, as it runs it (collector
          paused, `gc_pause.collection_paused`): parse, snapshot (`ObservedState.from_api`), and
          `decide_pass`: desired state (route table, rendered nginx config, proxy spec) and plan.

The first pass is cold (label parsing not cached yet); the next ones are what a running operator
pays when few labels changed. It prints one JSON object: medians in seconds and the process's
memory (VmRSS while it holds the snapshot and desired state, VmHWM its peak).
"""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.models.swarm.observed import ObservedState  # noqa: E402
from swarmgate.operator.control.gc_pause import collection_paused  # noqa: E402
from swarmgate.operator.planning.decide import decide_pass  # noqa: E402
from tests import factories as f  # noqa: E402

TOML = """
[Extensions.default]
  ProxyImage = "swarmgate/nginx:lab"
  PublishMode = "host"
"""
NODES = 50
TASKS_PER_SERVICE = 3


def api_responses(services: int) -> dict[str, str]:
    """The JSON text of /services, /tasks and /nodes for a Swarm of `services` routed services."""
    nodes = [f.node(f"wrk-{i}", f"198.18.{i // 200}.{10 + i % 200}") for i in range(NODES)]
    svc_docs, task_docs = [], []
    for i in range(services):
        svc = f.service(f"app-{i}", {"com.docker.lb.hosts": f"app-{i}.example.test", "com.docker.lb.port": "8080"})
        svc_docs.append(svc)
        for slot in range(TASKS_PER_SERVICE):
            task_docs.append(f.task(svc, f"wrk-{(i + slot) % NODES}", slot=slot + 1,
                                    ports={8080: 30000 + (i * TASKS_PER_SERVICE + slot) % 30000}))
    return {"services": json.dumps(svc_docs), "tasks": json.dumps(task_docs), "nodes": json.dumps(nodes)}


def memory_kib() -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def main() -> int:
    services = int(sys.argv[1])
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    responses = api_responses(services)
    config = parse_config(TOML, source="bench")
    gc.collect()
    before = memory_kib()

    def parse() -> dict[str, Any]:
        return {kind: json.loads(text) for kind, text in responses.items()}

    def parse_paused() -> dict[str, Any]:
        with collection_paused():
            return parse()

    def one_pass() -> Any:
        with collection_paused():
            observed = ObservedState.from_api(**parse())
            return observed, decide_pass(config, observed).desired

    def timed(fn: Any) -> tuple[float, Any]:
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    cold, held = timed(one_pass)
    parse_s: list[float] = []
    paused_s: list[float] = []
    pass_s: list[float] = []
    for _ in range(repeats):  # interleaved, so all see the same machine
        for fn, out in ((parse, parse_s), (parse_paused, paused_s)):
            seconds, _doc = timed(fn)
            del _doc
            out.append(seconds)
        del held
        seconds, held = timed(one_pass)
        pass_s.append(seconds)
    gc.collect()
    memory = memory_kib()
    observed, desired = held
    print(json.dumps({
        "services": services, "tasks": len(observed.tasks), "nodes": len(observed.nodes),
        "response_bytes": sum(len(t) for t in responses.values()),
        "parse_s": round(statistics.median(parse_s), 3), "parse_paused_s": round(statistics.median(paused_s), 3),
        "pass_s": round(statistics.median(pass_s), 3), "cold_pass_s": round(cold, 3),
        "ratio": round(statistics.median(pass_s) / statistics.median(parse_s), 2),
        "cold_ratio": round(cold / statistics.median(parse_s), 2),
        "ratio_to_paused_parse": round(statistics.median(pass_s) / statistics.median(paused_s), 2),
        "config_bytes": len(desired.extensions[0].rendered.text),
        "rss_mib": round((memory["VmRSS"] - before["VmRSS"]) / 1024, 1),
        "process_rss_mib": round(memory["VmRSS"] / 1024, 1), "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        "repeats": repeats,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What per-route traffic costs the leader operator at 10,000 routes (`python bench/traffic_export.py [N]`,
no lab needed).

The route table is built the way the operator builds it (tests/status_documents.py: a snapshot of
Engine-API JSON → `decide_pass`), with N routed services besides the seed-like few. One proxy task's
traffic file is made for it: per route, 2xx and 4xx count lines and request and upstream histograms
(four lines a route). Measured, each as the median of `--rounds` runs:

* parsing the file (`parse_traffic`), paid per proxy task every read (3 s);
* naming the table's KEYs and upstreams (`traffic_names`), paid once per pass that changed the table;
* recording two files into an empty ledger (`TrafficLedger.record`: the first whole, the second's
  increments), and a file that changed nothing, per read;
* the status rows' traffic over the last interval (`TrafficLedger.recent`), per `/v1/status`;
* the scrape: the traffic families of /metrics with that ledger (`TrafficCollector.exposition`, not
  kept from an earlier scrape), per Prometheus scrape that follows a change; and, for comparison,
  the same families through prometheus_client's `generate_latest` (one run: it takes seconds).

It writes bench/traffic-export.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from swarmgate.models.routing.traffic_key import traffic_key  # noqa: E402
from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.operator.control.gc_pause import collection_paused  # noqa: E402
from swarmgate.operator.delivery.traffic_file import parse_traffic  # noqa: E402
from swarmgate.operator.delivery.traffic_ledger import TrafficLedger  # noqa: E402
from swarmgate.operator.planning.decide import decide_pass  # noqa: E402
from swarmgate.operator.planning.traffic_names import traffic_names  # noqa: E402
from swarmgate.operator.telemetry.traffic_metrics import TrafficCollector  # noqa: E402
from tests import status_documents as docs  # noqa: E402

TASK = "proxytask00000000000000001"


def median_seconds(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 5)


def traffic_text(routes: list[tuple[str, str]], *, uptime: float, scale: int) -> str:
    lines = [f"swarmgate/3 traffic {TASK} bench-1 {uptime}"]
    for i, (key, upstream) in enumerate(routes):
        n = (i % 50 + 1) * scale
        lines += [f"c {key} {upstream} 2xx {n} {n * 900} {n * 200}", f"c {key} {upstream} 4xx {n // 10} 90 20",
                  f"h {key} {upstream} request {n} {n} 3 0 0 0 0 0 0 0 0 0 {n * 0.006:.3f}",
                  f"h {key} {upstream} upstream {n} {n} 0 0 0 0 0 0 0 0 0 0 {n * 0.005:.3f}"]
    return "\n".join([lines[0], *sorted(lines[1:])]) + "\n"  # the agent sorts its lines too


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="?", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "traffic-export.json")
    args = parser.parse_args()

    config = parse_config(docs.TOML, source="bench.toml")
    with collection_paused():
        table = decide_pass(config, docs.observed_state(args.services)).desired.extension("default").route_table
    routes = [(traffic_key(h.host, p.path), f"{u.address}:{u.port}") for h in table.hosts for p in h.paths
              for u in p.upstreams[:1]]
    first, second = traffic_text(routes, uptime=100.0, scale=1), traffic_text(routes, uptime=103.0, scale=2)
    names = traffic_names(table)
    ledger = TrafficLedger()
    collector = TrafficCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    collector.attach(ledger)
    parsed = parse_traffic(first), parse_traffic(second)

    def record_both() -> None:
        ledger.clear()
        ledger.record("default", parsed[0], names)
        ledger.record("default", parsed[1], names)

    record_both()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO, check=False).stdout.strip(),
        "python": platform.python_version(), "services": args.services, "routes_counted": len(routes),
        "rounds": args.rounds, "file_lines": first.count("\n"), "file_bytes": len(second),
        "parse_s": median_seconds(lambda: parse_traffic(second), args.rounds),
        "names_s": median_seconds(lambda: traffic_names(table), args.rounds),
        "record_two_files_s": median_seconds(record_both, args.rounds),
        "record_unchanged_s": median_seconds(lambda: ledger.record("default", parsed[1], names), args.rounds),
        "recent_s": median_seconds(ledger.recent, args.rounds),
        "scrape_s": median_seconds(lambda: (collector.attach(ledger), collector.exposition()), args.rounds),
        "scrape_bytes": len(collector.exposition()),
        "scrape_series": sum(1 for line in collector.exposition().splitlines() if not line.startswith(b"#")),
        "scrape_by_prometheus_client_s": median_seconds(lambda: generate_latest(registry), 1),
    }
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

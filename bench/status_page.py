"""The status page at 10,000 services (`python bench/status_page.py [N]`, no lab needed).

The `/v1/status` document is built the way the operator builds it (tests/status_documents.py: a
snapshot of Engine-API JSON → `decide_pass` → the proxies' store, findings, route rows), with N
routed services besides the seed-like few. Measured, each as the median of `--rounds` runs:

* what a pass now adds to its findings (set-aside hosts, leader and standbys), paid by every pass;
* the route rows, made from the last pass's desired state when `/v1/status` or the page first asks
  after a pass (with the cyclic collector paused, as the operator makes them);
* each route's traffic joined to the rows (`with_traffic`, every route measured), paid by each request;
* the page as a request renders it: unfiltered (first page of 100 routes), filtered by host (one
  match), by service (every `app-1*`), and the last page;
* `/v1/status` as JSON (`json_answer`), for comparison: what the same request cost before the page.

It writes bench/status-page.json and prints it.
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

from swarmgate.models.settings.config import parse_config  # noqa: E402
from swarmgate.operator.control.endpoint import json_answer  # noqa: E402
from swarmgate.operator.control.gc_pause import collection_paused  # noqa: E402
from swarmgate.operator.delivery.status import with_traffic  # noqa: E402
from swarmgate.operator.delivery.status_page import render_status_page  # noqa: E402
from swarmgate.operator.delivery.traffic_ledger import RouteTraffic  # noqa: E402
from swarmgate.operator.planning.decide import decide_pass  # noqa: E402
from swarmgate.operator.planning.findings import route_findings  # noqa: E402
from swarmgate.operator.planning.leadership import leader_summary, standbys  # noqa: E402
from swarmgate.operator.planning.route_rows import route_rows  # noqa: E402
from tests import status_documents as docs  # noqa: E402


def median_seconds(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="?", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "status-page.json")
    args = parser.parse_args()

    config = parse_config(docs.TOML, source="bench.toml")
    observed = docs.observed_state(args.services)
    with collection_paused():
        desired = decide_pass(config, observed).desired

    def pass_findings() -> dict[str, Any]:
        return {**route_findings(desired, observed),
                "leader": {**leader_summary(observed), "standbys": standbys(observed, None)}}

    def rows() -> list[dict[str, Any]]:
        with collection_paused():  # as `Operator.route_rows` makes them
            return route_rows(desired)

    document = docs.status(args.services)
    made_rows = rows()
    # Every route measured: what each `/v1/status` and page request pays to join traffic to the rows.
    traffic = {(r["extension"], r["host"], r["path"] or "/"): RouteTraffic(12.5, 0.01, 0.2) for r in made_rows}
    pages = {
        "unfiltered": {},
        "host_one_match": {"host": "app-1234.example.test"},
        "service_prefix": {"service": "app-1"},
        "last_page": {"page": "100000"},
    }
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO, check=False).stdout.strip(),
        "python": platform.python_version(), "services": args.services, "routes": len(document["routes"]),
        "rounds": args.rounds,
        "pass_findings_s": median_seconds(pass_findings, args.rounds),
        "route_rows_s": median_seconds(rows, args.rounds),
        "traffic_join_s": median_seconds(lambda: with_traffic(made_rows, traffic, {"default"}), args.rounds),
        "v1_status_json_s": median_seconds(lambda: json_answer(document), args.rounds),
        "v1_status_bytes": len(json_answer(document)[2]),
        "page_s": {name: median_seconds(lambda p=params: render_status_page(document, p), args.rounds)
                   for name, params in pages.items()},
        "page_bytes": {name: len(render_status_page(document, params).encode()) for name, params in pages.items()},
    }
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

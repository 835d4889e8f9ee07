"""bench/issue17_goals.py reads the benchmarks' results and says each goal's verdict: from the figures,
and `not measured` where a result is missing. No benchmark run."""

from __future__ import annotations

import json
from pathlib import Path

from bench import issue17_goals as goals


def write(bench: Path, name: str, doc: object) -> None:
    (bench / f"{name}.json").write_text(json.dumps(doc))


def test_every_goal_is_not_measured_without_results(tmp_path: Path) -> None:
    rows = goals.goal_rows(tmp_path)
    assert [(goal.split(":")[0], verdict) for goal, _, verdict, _ in rows] == [
        ("1, 3", "not measured"), ("2", "not measured"), ("3", "not measured"), ("4", "not measured"),
        ("5", "not measured"), ("6", "not measured"), ("7", "not measured")]


def test_verdicts_follow_the_figures(tmp_path: Path) -> None:
    stamp = {"date": "2026-12-07 15:00 UTC", "commit": "abc1234"}
    write(tmp_path, "keepalive-race", {**stamp, "cases": [
        {"case": "nginx-default-node", "GET": 10, "POST": 10, "GET failed": 0, "POST failed": 3},
        {"case": "swarmgate-node", "GET": 10, "POST": 10, "GET failed": 0, "POST failed": 0},
        {"case": "swarmgate-1s-unlabelled", "GET": 10, "POST": 10, "GET failed": 0, "POST failed": 4}]})
    write(tmp_path, "offline-render", {**stamp, "rows": {"render": {"wall_ratio": 1.5, "cpu_ratio": 2.5}}})
    write(tmp_path, "old-workers-lab", {**stamp, "timeout_seconds": 30.0, "readme_retirement_seconds": 240.0,
                                        "steady": {"verdict": "meets", "most_workers": 7, "worker_bound": 8,
                                                   "rss_max_last_third": 60.0, "rss_max_before_last_third": 61.0}})
    rows = {goal: (figure, verdict, source) for goal, figure, verdict, source in goals.goal_rows(tmp_path)}
    keepalive = rows["2: keep-alive on by default, 0 failed requests (the old settings' failures shown beside)"]
    # the unlabelled 1 s backend is the case the label exists for, not a default's failure
    assert keepalive == ("0 failed of 20 with the defaults; 3 POSTs failed with nginx's own idle timeout", "meets",
                         "bench/keepalive-race.json, 2026-12-07 15:00 UTC, abc1234")
    assert rows[goals.OFFLINE][:2] == ("2.5 (≤ 2)", "misses")
    assert rows["5: bounded old workers on an LB node of the lab"][1] == "meets"
    assert goals.markdown(goals.goal_rows(tmp_path)).startswith("# Issue 17's goals\n")


def test_a_layout_meets_goal_3_only_with_all_three_figures_in_bounds(tmp_path: Path) -> None:
    def sizes(one: int, ten_k: int, parse_1k: float, parse_10k: float, rss: float) -> dict[str, object]:
        return {"1": {"instructions_per_request": one}, "1000": {"cpu_s": parse_1k},
                "10000": {"instructions_per_request": ten_k, "cpu_s": parse_10k, "max_rss_mib": rss}}

    write(tmp_path, "stock-layouts", {"date": "d", "commit": "c", "layouts": {
        "flat-but-big": {"sizes": sizes(100, 105, 0.1, 1.0, 400.0)},
        "scans": {"sizes": sizes(100, 272, 0.05, 1.0, 145.0)},
        "balancer": {"sizes": sizes(100, 99, 0.04, 0.1, 25.0)}}})
    rows = {goal: (figure, verdict) for goal, figure, verdict, _ in goals.goal_rows(tmp_path)}
    assert rows["3: layout `flat-but-big`, all three at once"] == (
        "instructions/request 10k ÷ 1: 1.05 (≤ 1.11); `nginx -t` 10k ÷ 1k: 10.0 (≤ 12); 400 MiB (≤ 160)", "misses")
    assert rows["3: layout `scans`, all three at once"][1] == "misses"
    assert rows["3: layout `balancer`, all three at once"][1] == "meets"

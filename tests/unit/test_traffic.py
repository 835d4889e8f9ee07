"""Per-route traffic on the operator's side: the traffic file is parsed whole or refused, its KEYs and
upstreams are named by the route table, the ledger turns cumulative files into counters that only
grow, and the leader's poller reads them (a standby exports nothing; an old agent is skipped)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from swarmgate.models.routing.route_types import RouteTable
from swarmgate.models.routing.traffic_key import DEFAULT_KEY, traffic_key
from swarmgate.models.settings.config import parse_config
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.delivery.control_client import ControlClient, NoTrafficLocation, PushError
from swarmgate.operator.delivery.status import with_traffic
from swarmgate.operator.delivery.traffic_file import (
    CountLine,
    HistogramLine,
    TrafficFile,
    TrafficFileError,
    parse_traffic,
)
from swarmgate.operator.delivery.traffic_ledger import RouteCounters, RouteTraffic, TrafficLedger, quantile
from swarmgate.operator.delivery.traffic_poller import TrafficPoller
from swarmgate.operator.delivery.wire import ProxyTarget
from swarmgate.operator.planning.decide import decide_pass
from swarmgate.operator.planning.route_rows import route_rows
from swarmgate.operator.planning.traffic_names import TrafficNames, traffic_names
from swarmgate.operator.telemetry.traffic_metrics import TrafficCollector
from tests import status_documents as docs

TASK = "proxytask00000000000000001"
H0 = "0 " * 12


def table() -> RouteTable:
    desired = decide_pass(parse_config(docs.TOML, source="test.toml"), docs.observed_state()).desired
    return desired.extension("default").route_table


@pytest.mark.parametrize(
    ("host", "path", "key"),
    [("demo.local", "/ping", "demo.local/ping"), ("demo.local", "/", "demo.local/"),
     ("redirect.local", None, "redirect.local/"), ("*.example.com", "/", "*.example.com/")],
)
def test_a_route_key_is_its_host_and_path(host: str, path: str | None, key: str) -> None:
    assert traffic_key(host, path) == key


def test_a_traffic_file_is_parsed_whole() -> None:
    text = (f"swarmgate/3 traffic {TASK} 1733580000-42 12345.67\n"
            "c - - 5xx 3 600 300\n"
            "c demo.local/ 198.18.0.20:30001 2xx 10 5000 900\n"
            f"h demo.local/ 198.18.0.20:30001 request 4 3 2 1 0 0 0 0 0 0 0 0 0.042\n"
            f"h demo.local/ 198.18.0.20:30001 upstream 10 {'0 ' * 11}0.02\n")
    assert parse_traffic(text) == TrafficFile(
        TASK, "1733580000-42", 12345.67,
        (CountLine("-", "-", "5xx", 3, 600, 300), CountLine("demo.local/", "198.18.0.20:30001", "2xx", 10, 5000, 900)),
        (HistogramLine("demo.local/", "198.18.0.20:30001", "request", (4, 3, 2, 1) + (0,) * 8, 0.042),
         HistogramLine("demo.local/", "198.18.0.20:30001", "upstream", (10,) + (0,) * 11, 0.02)))
    assert parse_traffic(f"swarmgate/3 traffic {TASK} e 1") == TrafficFile(TASK, "e", 1.0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("<html>404</html>\n", "line 1: not a swarmgate/3 traffic header"),
        (f"swarmgate/3 traffic {TASK} e\n", "line 1: not a swarmgate/3 traffic header"),
        (f"swarmgate/3 traffic {TASK} e -1\n", "line 1: bad task, epoch or uptime"),
        ("swarmgate/3 traffic t;x e 1\n", "line 1: bad task, epoch or uptime"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 2\n", "line 2: neither a `c` line"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 2 3\nc a/ - 6xx 1 2 3\n", "line 3: unknown status class"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 -2 3\n", "line 2: a count that is not a whole number"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 2.0 3\n", "line 2: a count that is not a whole number"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 2 3\nc a/ - 2xx 4 5 6\n", "line 3: a second line"),
        (f"swarmgate/3 traffic {TASK} e 1\nh a/ - request {H0}x\n", "line 2: the sum is not a number"),
        (f"swarmgate/3 traffic {TASK} e 1\nh a/ - latency {H0}1\n", "line 2: unknown histogram kind"),
        (f"swarmgate/3 traffic {TASK} e 1\nh a/ - request {'0 ' * 11}1\n", "line 2: neither"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 2 3\n\n", "line 3: neither"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/\t - 2xx 1 2 3\n", "line 2: a key or upstream"),
        (f"swarmgate/3 traffic {TASK} e 1\nc a/ - 2xx 1 2 3", None),  # no final newline: still whole
    ],
    ids=["empty", "html", "short-header", "negative-uptime", "bad-task", "short-count", "bad-class",
         "negative-count", "fractional-count", "duplicate", "bad-sum", "bad-kind", "short-histogram",
         "blank-line", "tab-in-key", "no-final-newline"],
)
def test_a_malformed_traffic_file_is_refused_whole_with_a_one_line_reason(text: str, reason: str | None) -> None:
    if reason is None:
        assert parse_traffic(text).counts == (CountLine("a/", "-", "2xx", 1, 2, 3),)
        return
    with pytest.raises(TrafficFileError) as refused:
        parse_traffic(text)
    assert str(refused.value).startswith(reason) and "\n" not in str(refused.value)


def test_keys_and_upstreams_are_named_by_the_route_table() -> None:
    names = traffic_names(table())
    assert names.route("demo.local/") == ("demo.local", "/")
    assert names.route(DEFAULT_KEY) == ("-", "-")
    assert names.route("gone.local/api") == ("gone.local", "/api")  # a route removed since: the KEY's text
    assert names.route("odd") == ("odd", "")
    assert names.service("198.18.0.20:30001") == "demo"
    assert names.service("198.18.0.20:30002") == "secure"
    assert names.service("198.18.0.99:1") == "-"
    assert names.service("-") == "-"


def traffic(epoch: str, uptime: float, *lines: str, task: str = TASK) -> TrafficFile:
    return parse_traffic("\n".join([f"swarmgate/3 traffic {task} {epoch} {uptime}", *lines]) + "\n")


DEMO = "198.18.0.20:30001"


def counters(ledger: TrafficLedger) -> dict[tuple[str, ...], Any]:
    return {(task, *sid): (c.requests, c.bytes_sent, c.bytes_received, c.request_buckets, round(c.request_sum, 6),
                           c.upstream_buckets)
            for task, sid, c in ledger.series()}


def test_the_ledger_adds_increments_so_counters_only_grow() -> None:
    ledger, names = TrafficLedger(), traffic_names(table())
    ledger.record("default", traffic("e1", 100, f"c demo.local/ {DEMO} 2xx 10 1000 100",
                                     f"h demo.local/ {DEMO} request 10 {'0 ' * 11}0.01"), names)
    # Same EPOCH: only what is new counts; the demo task left the table meanwhile, so its new requests
    # go to service "-" and demo's counter does not shrink.
    ledger.record("default", traffic("e1", 103, f"c demo.local/ {DEMO} 2xx 14 1400 140", "c - - 5xx 2 20 10",
                                     f"h demo.local/ {DEMO} request 10 4 {'0 ' * 10}0.05"), TrafficNames())
    # A new EPOCH (the aggregator restarted): its whole file is new.
    ledger.record("default", traffic("e2", 105, f"c demo.local/ {DEMO} 2xx 1 100 10"), names)
    b = [0] * 12
    assert counters(ledger) == {
        (TASK, "default", "-", "-", "-"): ({"5xx": 2}, 20, 10, b, 0.0, None),
        (TASK, "default", "demo.local", "/", "-"): ({"2xx": 4}, 400, 40, [0, 4] + [0] * 10, 0.04, None),
        (TASK, "default", "demo.local", "/", "demo"): ({"2xx": 11}, 1100, 110, [10] + [0] * 11, 0.01, None),
    }


def test_the_last_interval_gives_rate_5xx_ratio_and_p99_per_route_over_every_proxy() -> None:
    ledger, names = TrafficLedger(), traffic_names(table())
    other = "proxytask00000000000000002"
    for task in (TASK, other):
        ledger.record("default", traffic("e", 10, f"c demo.local/ {DEMO} 2xx 0 0 0", task=task), names)
    assert ledger.recent() == {} and ledger.measured() == set()
    ledger.record("default", traffic("e", 20, f"c demo.local/ {DEMO} 2xx 100 0 0", f"c demo.local/ {DEMO} 5xx 10 0 0",
                                     f"h demo.local/ {DEMO} request 0 0 0 0 100 10 0 0 0 0 0 0 9"), names)
    ledger.record("default", traffic("e", 15, f"c demo.local/ {DEMO} 2xx 50 0 0", task=other), names)
    # 110 requests in 10 s on one proxy, 50 in 5 s on the other; 10 of the 160 failed.
    p99 = quantile(0.99, [0] * 4 + [100, 10] + [0] * 6)
    assert ledger.recent() == {("default", "demo.local", "/"): RouteTraffic(21.0, 10 / 160, p99)}
    assert ledger.measured() == {"default"}
    ledger.retain([other])
    assert {task for task, _, _ in ledger.series()} == {other}
    ledger.clear()
    assert ledger.series() == [] and ledger.recent() == {}


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [([0] * 12, None), ([100] + [0] * 11, 0.00495), ([0] * 4 + [100] + [0] * 7, 0.0995),
     ([0] * 11 + [5], 10.0), ([50, 50] + [0] * 10, 0.0099)],
    ids=["none", "first-bucket", "middle-bucket", "inf-bucket", "two-buckets"],
)
def test_p99_is_estimated_within_its_bucket_as_prometheus_does(buckets: list[int], expected: float | None) -> None:
    got = quantile(0.99, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_route_rows_get_their_traffic_and_the_rows_given_are_not_changed() -> None:
    desired = decide_pass(parse_config(docs.TOML, source="test.toml"), docs.observed_state()).desired
    rows = route_rows(desired)
    seen = {("default", "demo.local", "/"): RouteTraffic(12.5, 0.01, 0.25)}
    out = with_traffic(rows, seen, {"default"})
    assert {r["host"]: r["traffic"] for r in out} == {
        "demo.local": {"requests_per_second": 12.5, "ratio_5xx": 0.01, "p99_seconds": 0.25},
        "idle.local": {"requests_per_second": 0.0, "ratio_5xx": None, "p99_seconds": None},
        "secure.local": {"requests_per_second": 0.0, "ratio_5xx": None, "p99_seconds": None}}
    assert all("traffic" not in r for r in rows)
    assert {r["traffic"] is None for r in with_traffic(rows, {}, set())} == {True}


class ScriptedClient(ControlClient):
    """A control client whose traffic() answers from a script (the wire is tested with the agent)."""

    def __init__(self, target: ProxyTarget, answers: list[str | Exception]) -> None:
        super().__init__(target, KEY, KEY.client_context(), timeout=1)
        self.answers = answers

    def traffic(self) -> str:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


KEY = ChannelKey.generate()


def target(task: str) -> ProxyTarget:
    return ProxyTarget("default", task, "node-id", "lb-00", "198.18.0.30", 443)


def test_the_leader_reads_every_proxy_and_a_standby_exports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "swarmgate.traffic")
    old, new, bad = target("oldagent"), target(TASK), target("badfile")
    leading: list[tuple[ProxyTarget, ControlClient | None]] | None = [
        (old, ScriptedClient(old, [NoTrafficLocation("GET /swarmgate/v3/traffic: HTTP 404")])),
        (new, ScriptedClient(new, [f"swarmgate/3 traffic {TASK} e 1\nc demo.local/ {DEMO} 2xx 3 30 3\n"])),
        (bad, ScriptedClient(bad, ["swarmgate/3 traffic badfile e 1\nc x\n"])),
        (target("unread"), None),  # the pusher has not read it yet: nothing to use
    ]
    poller = TrafficPoller(ledger := TrafficLedger(), lambda: leading)
    poller.follow({"default": table()})
    for _ in range(3):
        for future in poller.round():
            future.result(timeout=5)
    assert counters(ledger) == {(TASK, "default", "demo.local", "/", "demo"): ({"2xx": 3}, 30, 3, [0] * 12, 0.0, None)}
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said == ["proxy task oldagent on lb-00 serves no traffic counters (an agent from before traffic "
                    "metrics): its traffic is not exported",
                    "proxy task badfile on lb-00: traffic file refused, nothing of it counted: line 2: neither a "
                    "`c` line of 7 fields nor an `h` line of 17: 'c x'"]
    leading = None  # this operator stood down
    poller.round()
    assert ledger.series() == []
    poller.stop()


def test_a_file_that_names_another_task_or_an_unreachable_proxy_counts_nothing() -> None:
    other = target(TASK)
    clients: list[tuple[ProxyTarget, ControlClient | None]] = [
        (other, ScriptedClient(other, ["swarmgate/3 traffic someoneelse e 1\nc a/ - 2xx 1 1 1\n"]))]
    poller = TrafficPoller(ledger := TrafficLedger(), lambda: clients)
    for future in poller.round():
        future.result(timeout=5)
    clients = [(other, ScriptedClient(other, [PushError("GET /swarmgate/v3/traffic: ConnectionRefusedError")]))]
    for future in poller.round():
        future.result(timeout=5)
    poller.stop()
    assert ledger.series() == []


def test_route_counters_copy_is_deep() -> None:
    c = RouteCounters({"2xx": 1}, upstream_buckets=[0] * 12)
    d = c.copy()
    d.requests["2xx"] = 5
    assert d.upstream_buckets is not None
    d.upstream_buckets[0] = 1
    assert c.requests == {"2xx": 1} and c.upstream_buckets == [0] * 12


def test_the_collector_exports_each_proxy_tasks_series_with_cumulative_buckets() -> None:
    ledger = TrafficLedger()
    ledger.record("default", traffic("e", 1, f"c demo.local/ {DEMO} 2xx 7 700 70", f"c demo.local/ {DEMO} 5xx 1 10 5",
                                     f"h demo.local/ {DEMO} request 2 3 0 0 0 0 0 0 0 0 0 3 30.5",
                                     f"h demo.local/ {DEMO} upstream 8 {'0 ' * 11}0.01"), traffic_names(table()))
    collector = TrafficCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    assert "swarmgate_route_requests_total{" not in generate_latest(registry).decode()  # nothing attached yet
    collector.attach(ledger)
    route = {"extension": "default", "host": "demo.local", "path": "/", "service": "demo", "proxy": TASK}
    les = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf")
    samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(generate_latest(registry)
                                                                                         .decode())
               for s in family.samples if s.labels.get("host") == "demo.local"]
    assert samples == [
        ("swarmgate_route_requests_total", {**route, "code": "2xx"}, 7),
        ("swarmgate_route_requests_total", {**route, "code": "5xx"}, 1),
        *[("swarmgate_route_request_duration_seconds_bucket", {**route, "le": le}, n)
          for le, n in zip(les, (2, 5, *[5] * 9, 8), strict=True)],
        ("swarmgate_route_request_duration_seconds_count", route, 8),
        ("swarmgate_route_request_duration_seconds_sum", route, 30.5),
        *[("swarmgate_route_upstream_duration_seconds_bucket", {**route, "le": le}, 8) for le in les],
        ("swarmgate_route_upstream_duration_seconds_count", route, 8),
        ("swarmgate_route_upstream_duration_seconds_sum", route, 0.01),
        ("swarmgate_route_response_bytes_total", route, 710),
        ("swarmgate_route_request_bytes_total", route, 75),
    ]


def test_metrics_writes_the_same_families_as_the_collector_gives_prometheus_client() -> None:
    ledger = TrafficLedger()
    odd = 'we"ird\\host'  # a KEY the table does not know, with characters the text format escapes
    ledger.record("default", traffic("e", 1, f"c demo.local/ {DEMO} 2xx 7 700 70", f"c {odd}/x - 4xx 2 20 10",
                                     f"h demo.local/ {DEMO} request 2 3 0 0 0 0 0 0 0 0 0 3 30.5",
                                     f"h {odd}/x - request 1 {'0 ' * 11}0.001",
                                     f"h demo.local/ {DEMO} upstream 8 {'0 ' * 11}0.01"), traffic_names(table()))
    ledger.record("default", traffic("e", 1, f"c demo.local/ {DEMO} 2xx 7 700 70", task="proxytask2"),
                  traffic_names(table()))
    collector = TrafficCollector()
    collector.attach(ledger)
    registry = CollectorRegistry()
    registry.register(collector)

    def families(text: str) -> list[tuple[str, str, str, list[tuple[str, list[tuple[str, str]], float]]]]:
        return [(f.name, f.type, f.documentation,
                 sorted((s.name, sorted(s.labels.items()), s.value) for s in f.samples))
                for f in text_string_to_metric_families(text)]

    written = collector.exposition()
    assert len(families(written.decode())) == 5 and sum(len(f[3]) for f in families(written.decode())) == 51
    assert families(written.decode()) == families(generate_latest(registry).decode())
    assert collector.exposition() is written  # kept until the ledger changes
    ledger.retain(["proxytask2"])
    assert collector.exposition() != written

"""Delivery without the agent: the swarmgate/3 status and push formats and their MACs, which tasks
are pushed to, what the store makes of their statuses, and the operator's read-only endpoint."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from swarmgate.errors import ConfigError
from swarmgate.models.settings.config import parse_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import KIND_PROXY, owned_labels
from swarmgate.operator.control.endpoint import EndpointServer, json_answer, parse_listen_addr, serve
from swarmgate.operator.control.loop import DockerHealth
from swarmgate.operator.control.readiness import Readiness
from swarmgate.operator.delivery.channel_key import ChannelKey, ChannelKeyError
from swarmgate.operator.delivery.control_client import SequenceNumbers
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.status import status_document
from swarmgate.operator.delivery.wire import (
    AgentStatus,
    ForgedStatus,
    ProxyTarget,
    parse_status,
    proxy_targets,
    push_body,
    verify_status,
)
from swarmgate.operator.telemetry.holds import HoldReport
from tests import factories as f

D1, D2 = "1" * 64, "2" * 64
KEY = ChannelKey.generate()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"swarmgate/3 status t1 ok {D1} 7 9\n", AgentStatus("t1", D1, term=7, seq=9)),
        ("swarmgate/3 status t1 ok - 0 0\n", AgentStatus("t1", "")),
        (f"swarmgate/3 status t1 error {D2} {D1} 3 4\nnginx: [emerg] unknown directive \"x\"\n",
         AgentStatus("t1", D1, D2, 'nginx: [emerg] unknown directive "x"', 3, 4)),
        ("swarmgate/3 status t1 error - - 1 1\nnot a swarmgate/3 config\n",
         AgentStatus("t1", "", "-", "not a swarmgate/3 config", 1, 1)),
        (f"swarmgate/2 t1 ok {D1}\n", None),
        (f"swarmgate/3 status t1 ok {D1} 1 2 extra\n", None),
        (f"swarmgate/3 status t1 ok {D1} 01 2\n", None),
        (f"swarmgate/3 status t1 ok {D1} -1 2\n", None),
        ("swarmgate/3 status t1 ok sha256:abc 1 1\n", None),
        (f"swarmgate/3 status t1;rm ok {D1} 1 1\n", None),
        (f"swarmgate/3 status t1 maybe {D1} 1 1\n", None),
        ("<html>404</html>", None),
        ("", None),
    ],
    ids=["ok", "bootstrap", "error", "error-not-a-config", "old-protocol", "extra-field", "leading-zero",
         "negative-term", "bad-digest", "bad-task-id", "bad-kind", "html", "empty"],
)
def test_agent_status_is_parsed_or_refused(text: str, expected: AgentStatus | None) -> None:
    assert parse_status(text) == expected


def signed(body: str, key: ChannelKey = KEY) -> bytes:
    return body.encode() + f"swarmgate/3 mac {key.mac(body.encode())}\n".encode()


def test_a_status_is_believed_only_with_the_channel_keys_mac() -> None:
    body = f"swarmgate/3 status t1 ok {D1} 5 6\n"
    assert verify_status(signed(body), KEY) == AgentStatus("t1", D1, term=5, seq=6)
    forgeries = [
        body.encode(),  # no mac line
        signed(body, ChannelKey.generate()),  # another key
        signed(body).replace(b" ok ", b" ok ", 1).replace(D1.encode(), D2.encode(), 1),  # altered after signing
        signed("<html>hello</html>\n"),  # signed, but no status
    ]
    for raw in forgeries:
        with pytest.raises(ForgedStatus):
            verify_status(raw, KEY)


def test_a_push_names_task_term_sequence_and_digest_under_one_mac() -> None:
    text = "events {}\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    body = push_body(KEY, task="t1", term=12, seq=34, digest=digest, text=text)
    header, _, rest = body.partition(b"\n")
    signed_part, _, mac = header.decode().rpartition(" ")
    assert signed_part == f"swarmgate/3 config t1 12 34 {digest}" and rest == text.encode()
    assert KEY.verify(signed_part.encode(), mac) and not ChannelKey.generate().verify(signed_part.encode(), mac)
    for bad in ({"task": "t1;x"}, {"term": -1}, {"seq": 10**18}, {"digest": "abc"}):
        with pytest.raises(ValueError):
            push_body(KEY, **{"task": "t1", "term": 1, "seq": 1, "digest": digest, "text": text, **bad})  # type: ignore[arg-type]


def test_sequence_numbers_only_grow_even_when_the_clock_steps_back() -> None:
    clock = iter([100, 100, 50, 200])
    seq = SequenceNumbers(lambda: next(clock))
    assert [seq.next() for _ in range(4)] == [100, 101, 102, 200]


def test_a_channel_key_file_round_trips_and_never_shows_its_secrets() -> None:
    again = ChannelKey.parse(KEY.file_text())
    assert again == KEY and again.fingerprint == KEY.fingerprint
    assert KEY.hmac_key.hex() not in repr(KEY) and "PRIVATE" not in repr(KEY)
    for bad in ("", "swarmgate/3 channel-key xyz\n", KEY.file_text().split("-----BEGIN PRIVATE KEY")[0]):
        with pytest.raises(ChannelKeyError) as err:
            ChannelKey.parse(bad)
        assert KEY.hmac_key.hex() not in str(err.value)


SEED = """
[Extensions.default]
  ProxyServiceName = "interlock-proxy"
  PublishMode = "host"
  TargetPort = 8000
  PublishedPort = 80
  TargetSSLPort = 8443
  PublishedSSLPort = 443
"""


def proxy_service(owned: bool = True) -> dict[str, Any]:
    labels = owned_labels(kind=KIND_PROXY, extension="default") if owned else {}
    return f.service("interlock-proxy", labels, host_ports=(8000, 8443))


def snapshot(*, owned: bool = True) -> ObservedState:
    proxy = proxy_service(owned)
    return ObservedState.from_api(
        services=[proxy],
        tasks=[f.task(proxy, "lb-00", slot=1, id="a1", ports={8000: 80, 8443: 443}),
               f.task(proxy, "lb-01", slot=2, id="b1", ports={8000: 80, 8443: 443}),
               f.task(proxy, "lb-01", slot=2, id="b0", state="shutdown", desired="shutdown",
                      ports={8000: 80, 8443: 443}),
               f.task(proxy, "lb-02", slot=3, id="c1", state="starting")],
        nodes=[f.node("lb-00", "198.18.0.12"), f.node("lb-01", "198.18.0.13"), f.node("lb-02", "198.18.0.14")])


@pytest.mark.parametrize(
    ("extra", "owned", "expected"),
    [
        ("", True, {"default": [ProxyTarget("default", "a1", "lb-00", "lb-00", "198.18.0.12", 443),
                                ProxyTarget("default", "b1", "lb-01", "lb-01", "198.18.0.13", 443)]}),
        ("", False, {}),
        ("  HitlessServiceUpdate = false\n", True, {}),
        ('  PublishMode = "ingress"\n', True, {}),
    ],
    ids=["running-tasks-at-node-address-and-tls-host-port", "foreign-service", "plain-delivery", "ingress"],
)
def test_proxy_targets_are_the_running_tasks_of_the_owned_proxy(extra: str, owned: bool,
                                                                 expected: dict[str, list[ProxyTarget]]) -> None:
    text = SEED.replace('  PublishMode = "host"\n', "") + extra if "PublishMode" in extra else SEED + extra
    config = parse_config(text, source="t.toml")
    assert proxy_targets(config, snapshot(owned=owned)) == expected


def test_a_running_proxy_task_whose_port_status_swarm_forgot_is_reached_on_the_configured_port() -> None:
    # Seen on the lab after a manager loss: the LB node's task kept running with an empty PortStatus.
    proxy = proxy_service()
    observed = ObservedState.from_api(services=[proxy], tasks=[f.task(proxy, "lb-01", slot=1, id="b1")],
                                      nodes=[f.node("lb-01", "198.18.0.13")])
    config = parse_config(SEED, source="t.toml")
    assert proxy_targets(config, observed) == {
        "default": [ProxyTarget("default", "b1", "lb-01", "lb-01", "198.18.0.13", 443)]}


def test_a_status_after_a_push_counts_a_reload_and_a_rejection_keeps_the_served_digest() -> None:
    reloads: list[tuple[str, bool]] = []
    store = ProxyState(on_reload=lambda c, ok: reloads.append((c, ok)))
    store.publish("c", "conf", D1)
    store.record_status(cluster="c", task="t1", node="n1", hostname="lb-00", serving="")
    store.record_status(cluster="c", task="t1", node="n1", hostname="lb-00", serving="", rejected=D1,
                        message="nginx: [emerg] bad", pushed=True)
    (rec,) = store.proxies("c")
    assert (rec.served_digest, rec.rejected_digest, rec.last_status, rec.last_error) == ("", D1, "error",
                                                                                         "nginx: [emerg] bad")
    store.publish("c", "conf 2", D2)
    store.record_status(cluster="c", task="t1", node="n1", hostname="lb-00", serving=D2, pushed=True)
    assert store.all_current("c") and reloads == [("c", False), ("c", True)]


def test_a_scheduled_proxy_not_heard_from_yet_holds_convergence_back() -> None:
    converged: list[float] = []
    store = ProxyState(on_converged=lambda _c, s: converged.append(s))
    store.publish("c", "x", D1)
    store.retain_tasks({"c": ["t1", "t2"]})  # t2 is starting on another LB node
    store.record_status(cluster="c", task="t1", node="n1", hostname="lb-00", serving=D1)
    assert not store.all_current("c") and converged == []
    store.record_status(cluster="c", task="t2", node="n2", hostname="lb-01", serving=D1)
    assert store.all_current("c") and len(converged) == 1


def test_retired_and_stale_proxies_leave_the_picture() -> None:
    now = [1000.0]
    store = ProxyState(clock=lambda: now[0], stale_after=60)
    store.publish("c", "x", D1)
    for task in ("t1", "t2"):
        store.record_status(cluster="c", task=task, node="n", hostname="h", serving=D1)
    now[0] += 30
    store.record_status(cluster="c", task="t1", node="n", hostname="h", serving=D1)
    now[0] += 40  # t2 unheard of for 70 s
    assert [p.task for p in store.proxies("c")] == ["t1"]
    store.retain_tasks({"c": ["t2"]})
    assert store.proxies("c") == [] and not store.all_current("c")


@pytest.fixture
def store() -> ProxyState:
    return ProxyState()


@pytest.fixture
def server(store: ProxyState) -> Iterator[EndpointServer]:
    # Docker never answered this operator: not ready.
    readiness = Readiness(DockerHealth(), HoldReport(), max_age=30.0)
    srv = serve("127.0.0.1:0", {"/metrics": lambda: (200, "text/plain", b"m 1\n"), "/readyz": readiness.answer,
                                "/v1/status": lambda: json_answer(status_document(store))})
    yield srv
    srv.shutdown()


def call(srv: EndpointServer, path: str, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_status_document_shows_each_proxy_task_and_whether_it_is_current(store: ProxyState,
                                                                          server: EndpointServer) -> None:
    store.publish("c", "conf A\n", D1)
    store.record_status(cluster="c", task="t1", node="n1", hostname="lb-00", serving=D1)
    store.record_status(cluster="c", task="t2", node="n2", hostname="lb-01", serving="", rejected=D1,
                        message="nginx: [emerg] unknown directive \"x\"", pushed=True)
    status, text = call(server, "/v1/status")
    doc = json.loads(text)["clusters"]["c"]
    assert status == 200 and doc["digest"] == D1 and doc["all_current"] is False
    rows = [(p["task"], p["hostname"], p["served_digest"], p["current"], p["last_status"], p["rejected_digest"])
            for p in doc["proxies"]]
    assert rows == [("t1", "lb-00", D1, True, "ok", None), ("t2", "lb-01", None, False, "error", D1)]


@pytest.mark.parametrize(
    ("path", "method", "code"),
    [("/healthz", "GET", 200), ("/readyz", "GET", 503), ("/metrics", "GET", 200), ("/v1/status", "POST", 405),
     ("/v1/proxy/config", "GET", 404), ("/v1/proxy/report", "POST", 405), ("/nope", "GET", 404)],
    ids=["healthz", "readyz-not-ready", "metrics", "status-by-post", "old-poll-route", "old-report-route",
         "unknown"],
)
def test_endpoint_routes(server: EndpointServer, path: str, method: str, code: int) -> None:
    assert call(server, path, method)[0] == code


@pytest.mark.parametrize(
    ("addr", "expected"),
    [(":8080", ("", 8080)), ("0.0.0.0:8080", ("0.0.0.0", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0))],
)
def test_listen_addr_forms(addr: str, expected: tuple[str, int]) -> None:
    assert parse_listen_addr(addr) == expected


@pytest.mark.parametrize("addr", ["8080", "host:", ":http", ":70000"])
def test_bad_listen_addr_is_a_config_error(addr: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen_addr(addr)

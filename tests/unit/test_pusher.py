"""Delivery without the agent: the swarmgate/2 status format, which tasks are pushed to, what the
store makes of their statuses, and the operator's read-only endpoint over loopback HTTP."""

from __future__ import annotations

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
from swarmgate.operator.delivery.endpoint import EndpointServer, parse_listen_addr, serve
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.token import TokenCheck, new_token, token_digest
from swarmgate.operator.delivery.wire import AgentStatus, ProxyTarget, parse_status, proxy_targets, push_body
from tests import factories as f

D1, D2 = "1" * 64, "2" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"swarmgate/2 t1 ok {D1}\n", AgentStatus("t1", D1)),
        ("swarmgate/2 t1 ok -\n", AgentStatus("t1", "")),
        (f"swarmgate/2 t1 error {D2} {D1}\nnginx: [emerg] unknown directive \"x\"\n",
         AgentStatus("t1", D1, D2, 'nginx: [emerg] unknown directive "x"')),
        ("swarmgate/2 t1 error - -\nnot a swarmgate/2 config\n",
         AgentStatus("t1", "", "-", "not a swarmgate/2 config")),
        (f"swarmgate/1 t1 ok {D1}\n", None),
        (f"swarmgate/2 t1 ok {D1} extra\n", None),
        ("swarmgate/2 t1 ok sha256:abc\n", None),
        (f"swarmgate/2 t1;rm ok {D1}\n", None),
        (f"swarmgate/2 t1 maybe {D1}\n", None),
        ("<html>404</html>", None),
        ("", None),
    ],
    ids=["ok", "bootstrap", "error", "error-not-a-config", "old-protocol", "extra-field", "bad-digest",
         "bad-task-id", "bad-kind", "html", "empty"],
)
def test_agent_status_is_parsed_or_refused(text: str, expected: AgentStatus | None) -> None:
    assert parse_status(text) == expected


def test_push_body_names_the_digest_on_its_first_line() -> None:
    assert push_body(D1, "events {}\n") == f"swarmgate/2 config {D1}\nevents {{}}\n".encode()


SEED = """
[Extensions.default]
  ProxyServiceName = "interlock-proxy"
  PublishMode = "host"
  TargetPort = 8000
  PublishedPort = 80
"""


def proxy_service(owned: bool = True) -> dict[str, Any]:
    labels = owned_labels(kind=KIND_PROXY, extension="default") if owned else {}
    return f.service("interlock-proxy", labels, host_ports=(8000,))


def snapshot(*, owned: bool = True) -> ObservedState:
    proxy = proxy_service(owned)
    return ObservedState.from_api(
        services=[proxy],
        tasks=[f.task(proxy, "lb-00", slot=1, id="a1", ports={8000: 80}),
               f.task(proxy, "lb-01", slot=2, id="b1", ports={8000: 80}),
               f.task(proxy, "lb-01", slot=2, id="b0", state="shutdown", desired="shutdown", ports={8000: 80}),
               f.task(proxy, "lb-02", slot=3, id="c1", state="starting")],
        nodes=[f.node("lb-00", "198.18.0.12"), f.node("lb-01", "198.18.0.13"), f.node("lb-02", "198.18.0.14")])


@pytest.mark.parametrize(
    ("extra", "owned", "expected"),
    [
        ("", True, {"default": [ProxyTarget("default", "a1", "lb-00", "lb-00", "198.18.0.12", 80),
                                ProxyTarget("default", "b1", "lb-01", "lb-01", "198.18.0.13", 80)]}),
        ("", False, {}),
        ("  HitlessServiceUpdate = false\n", True, {}),
        ('  PublishMode = "ingress"\n', True, {}),
    ],
    ids=["running-tasks-at-node-address-and-host-port", "foreign-service", "plain-delivery", "ingress"],
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
        "default": [ProxyTarget("default", "b1", "lb-01", "lb-01", "198.18.0.13", 80)]}


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
    srv = serve("127.0.0.1:0", store, extra_routes={"/metrics": lambda: (200, "text/plain", b"m 1\n")},
                ready=lambda: False)
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


def test_token_digest_is_all_that_is_kept() -> None:
    token = new_token()
    check = TokenCheck(token_digest(token))
    assert check.matches(token) and not check.matches(token + "x") and not check.matches("")
    assert token not in repr(check) and token not in check.digest
    with pytest.raises(ValueError):
        TokenCheck("md5:abc")

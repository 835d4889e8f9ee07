"""The operator's endpoint over real loopback HTTP: long polls, reports, tokens, status."""

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from swarmgate.errors import ConfigError
from swarmgate.operator.delivery.endpoint import EndpointServer, parse_listen_addr, serve
from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.token import TokenCheck, new_token, token_digest

TOKEN = new_token()
HOLD = 0.5


@pytest.fixture
def store() -> ProxyState:
    return ProxyState()


@pytest.fixture
def server(store: ProxyState) -> Iterator[EndpointServer]:
    srv = serve("127.0.0.1:0", store, TokenCheck(token_digest(TOKEN)), hold_seconds=HOLD,
                extra_routes={"/metrics": lambda: (200, "text/plain", b"m 1\n")})
    yield srv
    srv.shutdown()


def call(srv: EndpointServer, path: str, params: dict[str, str] | None = None, *, token: str | None = TOKEN,
         body: bytes | None = None) -> tuple[int, str]:
    url = f"http://127.0.0.1:{srv.port}{path}" + (f"?{urlencode(params)}" if params else "")
    req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def poll(srv: EndpointServer, have: str = "", failed: str = "", task: str = "t1") -> tuple[int, str]:
    return call(srv, "/v1/proxy/config", {"cluster": "c", "task": task, "node": "n1", "hostname": "lb-1",
                                          "have": have, "failed": failed})


def test_poll_answers_at_once_when_digests_differ(store: ProxyState, server: EndpointServer) -> None:
    store.publish("c", "conf A\n", "dA")
    start = time.monotonic()
    assert poll(server, have="old") == (200, "swarmgate/1 config dA\nconf A\n")
    assert time.monotonic() - start < HOLD


def test_poll_is_held_then_answers_unchanged(store: ProxyState, server: EndpointServer) -> None:
    store.publish("c", "conf A\n", "dA")
    start = time.monotonic()
    assert poll(server, have="dA") == (200, "swarmgate/1 unchanged dA\n")
    assert time.monotonic() - start >= HOLD


def test_poll_before_any_publish_is_held_and_answers_unchanged(server: EndpointServer) -> None:
    assert poll(server) == (200, "swarmgate/1 unchanged -\n")


def test_held_poll_answers_as_soon_as_a_config_is_published(store: ProxyState) -> None:
    srv = serve("127.0.0.1:0", store, TokenCheck(token_digest(TOKEN)), hold_seconds=10)
    try:
        store.publish("c", "conf A\n", "dA")
        threading.Timer(0.3, store.publish, args=("c", "conf B\n", "dB")).start()
        start = time.monotonic()
        assert poll(srv, have="dA") == (200, "swarmgate/1 config dB\nconf B\n")
        assert time.monotonic() - start < 5
    finally:
        srv.shutdown()


def test_rejected_digest_is_not_sent_again(store: ProxyState, server: EndpointServer) -> None:
    store.publish("c", "bad\n", "dBad")
    assert poll(server, have="dA", failed="dBad") == (200, "swarmgate/1 unchanged dBad\n")


@pytest.mark.parametrize("token", [None, "wrong", ""], ids=["missing", "wrong", "empty"])
def test_agent_routes_refuse_a_missing_or_wrong_token(server: EndpointServer, token: str | None) -> None:
    assert call(server, "/v1/proxy/config", {"cluster": "c", "task": "t"}, token=token)[0] == 401
    assert call(server, "/v1/proxy/report", {"cluster": "c", "task": "t", "status": "ok"}, token=token,
                body=b"")[0] == 401


def test_token_from_a_callable_follows_the_operator(store: ProxyState) -> None:
    digest: list[str | None] = [None]
    srv = serve("127.0.0.1:0", store, lambda: digest[0], hold_seconds=0)
    try:
        assert poll(srv)[0] == 401  # the operator has not read the token secret's label yet
        digest[0] = token_digest(TOKEN)
        assert poll(srv)[0] == 200
    finally:
        srv.shutdown()


@pytest.mark.parametrize(
    ("path", "params", "method_body", "code"),
    [
        ("/v1/proxy/config", {"task": "t"}, None, 400),
        ("/v1/proxy/config", {"cluster": "c", "task": "t; rm"}, None, 400),
        ("/v1/proxy/config", {"cluster": "c", "task": "t", "have": "a b"}, None, 400),
        ("/v1/proxy/report", {"cluster": "c", "task": "t", "status": "maybe"}, b"", 400),
        ("/v1/proxy/report", {"cluster": "c", "task": "t", "status": "ok"}, None, 405),
        ("/nope", {}, None, 404),
    ],
    ids=["no-cluster", "bad-task", "bad-digest", "bad-status", "report-by-get", "unknown-path"],
)
def test_bad_requests(server: EndpointServer, path: str, params: dict[str, str], method_body: bytes | None,
                      code: int) -> None:
    status, text = call(server, path, params, body=method_body)
    assert status == code and text.count("\n") == 1


def test_reports_and_polls_make_the_status(store: ProxyState, server: EndpointServer) -> None:
    store.publish("c", "conf A\n", "dA")
    assert poll(server, task="t1")[0] == 200  # t1 still serves the bootstrap
    assert poll(server, task="t2", have="dA")[0] == 200
    assert not store.all_current("c")
    report = {"cluster": "c", "task": "t1", "node": "n1", "hostname": "lb-1"}
    assert call(server, "/v1/proxy/report", {**report, "digest": "dB", "status": "error"},
                body=b"nginx: [emerg] unknown directive \"x\"\n") == (200, "ok\n")
    assert call(server, "/v1/proxy/report", {**report, "digest": "dA", "status": "ok"}, body=b"") == (200, "ok\n")
    assert store.wait_converged("c", timeout=1)
    status, text = call(server, "/v1/status", token=None)
    assert status == 200
    doc = json.loads(text)["clusters"]["c"]
    assert doc["digest"] == "dA" and doc["all_current"] is True
    assert doc["converged_at"] >= doc["published_at"]
    t1 = doc["proxies"][0]
    assert (t1["task"], t1["node"], t1["hostname"], t1["served_digest"], t1["current"]) == (
        "t1", "n1", "lb-1", "dA", True)
    assert t1["rejected_digest"] == "dB" and t1["last_status"] == "ok"
    assert t1["last_error"] == 'nginx: [emerg] unknown directive "x"'
    assert TOKEN not in text


def test_extra_routes_health_and_readiness(server: EndpointServer) -> None:
    assert call(server, "/metrics", token=None) == (200, "m 1\n")
    assert call(server, "/healthz", token=None) == (200, "ok\n")
    assert call(server, "/readyz", token=None) == (200, "ready\n")


def test_shutdown_releases_held_polls(store: ProxyState) -> None:
    srv = serve("127.0.0.1:0", store, TokenCheck(token_digest(TOKEN)), hold_seconds=30)
    result: list[tuple[int, str]] = []
    t = threading.Thread(target=lambda: result.append(poll(srv)))
    t.start()
    time.sleep(0.2)
    start = time.monotonic()
    srv.shutdown()
    t.join(5)
    assert time.monotonic() - start < 3 and result and result[0][0] == 200


def test_stale_and_retired_proxies_leave_the_picture() -> None:
    now = [1000.0]
    store = ProxyState(clock=lambda: now[0], stale_after=60)
    store.publish("c", "x", "d1")
    for task in ("t1", "t2"):
        store.record_poll(cluster="c", task=task, node="n", hostname="h", have="d1")
    now[0] += 30
    store.record_poll(cluster="c", task="t1", node="n", hostname="h", have="d1")
    assert store.all_current("c")
    now[0] += 40  # t2 silent for 70 s
    assert [p.task for p in store.proxies("c")] == ["t1"]
    store.retain_tasks({"c": ["t2"]})
    assert store.proxies("c") == [] and not store.all_current("c")


def test_a_scheduled_proxy_that_has_not_reported_yet_holds_convergence_back() -> None:
    store = ProxyState()
    store.publish("c", "x", "d1")
    store.record_report(cluster="c", task="t1", node="n1", hostname="lb-00", digest="d1", ok=True, message="")
    store.retain_tasks({"c": ["t1", "t2"]})  # t2 is starting on another LB node
    assert not store.all_current("c")
    store.record_report(cluster="c", task="t2", node="n2", hostname="lb-01", digest="d1", ok=True, message="")
    assert store.all_current("c")


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

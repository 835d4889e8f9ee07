"""ACME in the pure pass (`planning/acme_plan`, through `decide_pass`): orders, certificate secrets
written from the worker's outcomes and never shown, the route table serving them, backoff per host,
and obsolete secrets removed only once nothing mounts them. No Docker."""

from __future__ import annotations

import dataclasses
import datetime

from swarmgate.models.routing.route_types import TLSFiles
from swarmgate.models.settings.config import parse_config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.operator.control.acme_wiring import acme_status
from swarmgate.operator.planning import certificates
from swarmgate.operator.planning.acme_plan import Issued, Outcome
from swarmgate.operator.planning.actions import CreateCertificateSecret, RemoveCertificateSecret
from swarmgate.operator.planning.certificates import Order
from swarmgate.operator.planning.decide import PassDecision, PassMemory, decide_pass
from swarmgate.operator.planning.findings import findings_text
from tests.factories import node, service, swarm_secret, task
from tests.unit.test_certificates import self_signed
from tests.unit.test_plan import SEED

DIRECTORY = "https://198.18.0.1:14000/dir"
CONFIG = parse_config(f'ACMEDirectory = "{DIRECTORY}"\n' + SEED, source="t.toml")
T0 = datetime.datetime(2026, 12, 7, 6, 0, tzinfo=datetime.UTC)
THUMB = "T" * 43


def web(hosts: str = "a.example.com,b.example.com") -> dict[str, object]:
    return service("web", {"com.docker.lb.hosts": hosts, "com.docker.lb.port": "8080", "swarmgate.acme": "true"})


def observed(*secrets: dict[str, object], services: tuple[dict[str, object], ...] = ()) -> ObservedState:
    svc = services or (web(),)
    return ObservedState.from_api(services=list(svc), tasks=[task(s, "w0", ports={8080: 31000}) for s in svc],
                                  nodes=[node("w0", "198.18.0.20")], secrets=list(secrets))


def issued(host: str, start: datetime.datetime = T0, days: int = 90) -> Issued:
    chain, key = self_signed(host, start, start + datetime.timedelta(days=days))
    return Issued(certificates.describe(host, chain, DIRECTORY), certificates.secret_data(chain, key))


def stored(item: Issued) -> dict[str, object]:
    return swarm_secret(item.cert.secret_name, labels=certificates.labels_for(item.cert))


NO_MEMORY = PassMemory()


def decide(state: ObservedState, memory: PassMemory = NO_MEMORY, outcomes: tuple[Outcome, ...] = (),
           now: datetime.datetime = T0) -> PassDecision:
    return decide_pass(CONFIG, state, memory=memory, now=now, acme_thumbprint=THUMB, outcomes=outcomes)


def test_each_host_without_a_certificate_is_ordered_and_served_over_http_meanwhile() -> None:
    first = decide(observed())
    assert first.acme.orders == (Order("a.example.com", "missing"), Order("b.example.com", "missing"))
    table = first.desired.extensions[0].route_table
    assert [h.tls for h in table.hosts] == [None, None]
    assert f"$swarmgate_acme_token.{THUMB}" in first.desired.extensions[0].rendered.text
    # Without a time (an offline command given none) nothing is ordered.
    assert decide_pass(CONFIG, observed()).acme.orders == ()


def test_a_certificate_brought_back_is_stored_once_never_shown_and_then_served() -> None:
    a = issued("a.example.com")
    decision = decide(observed(), outcomes=(Outcome("a.example.com", a),))
    creates = [x for x in decision.actions if isinstance(x, CreateCertificateSecret)]
    assert [c.name for c in creates] == [a.cert.secret_name] and creates[0].data == a.data
    assert b"PRIVATE KEY" in a.data
    for shown in (creates[0].describe(), repr(creates[0]), repr(decision.memory)):
        assert "PRIVATE" not in shown and "BEGIN" not in shown
    assert decision.acme.orders == (Order("b.example.com", "missing"),)  # a is not ordered twice
    # Until its secret is seen, every pass plans it again (a failed write is retried).
    again = decide(observed(), memory=decision.memory)
    assert [x.name for x in again.actions if isinstance(x, CreateCertificateSecret)] == [a.cert.secret_name]
    seen = decide(observed(stored(a)), memory=again.memory)
    assert not any(isinstance(x, CreateCertificateSecret) for x in seen.actions)
    assert seen.memory.acme.pending == ()
    host_a = seen.desired.extensions[0].route_table.hosts[0]
    assert host_a.tls == TLSFiles(a.cert.secret_name, a.cert.secret_name)
    assert seen.acme.orders == (Order("b.example.com", "missing"),)


def test_a_failing_host_backs_off_and_never_holds_another_back() -> None:
    failed = decide(observed(), outcomes=(Outcome("a.example.com", error="connection refused"),))
    assert failed.acme.orders == (Order("b.example.com", "missing"),)
    assert failed.memory.acme.memory.failures["a.example.com"].reason == "connection refused"
    later = decide(observed(), memory=failed.memory, now=T0 + datetime.timedelta(minutes=1))
    assert Order("a.example.com", "missing", failures=1) in later.acme.orders
    assert failed.acme.next_due == T0 + datetime.timedelta(minutes=1)


def test_renewal_at_two_thirds_and_obsolete_secrets_removed_only_when_nothing_mounts_them() -> None:
    old = issued("a.example.com", T0 - datetime.timedelta(days=100))  # expired
    new = issued("a.example.com", T0 - datetime.timedelta(days=61))  # past 2/3 of 90 days
    gone = issued("c.example.com")  # a host no longer wanted
    state = observed(stored(old), stored(new), stored(gone), services=(web("a.example.com"),))
    decision = decide(state)
    assert decision.acme.orders == (Order("a.example.com", "renewal"),)
    removes = [x for x in decision.actions if isinstance(x, RemoveCertificateSecret)]
    assert sorted(r.name for r in removes) == sorted([old.cert.secret_name, gone.cert.secret_name])
    assert decision.actions[-1] in removes  # after everything else
    # A secret a service (the courier) still mounts stays.
    courier = service("interlock-proxy-certs", {"swarmgate.managed-by": "swarmgate"})
    courier["Spec"]["TaskTemplate"] = {"ContainerSpec": {"Secrets": [
        {"SecretName": gone.cert.secret_name, "SecretID": "x", "File": {"Name": "x"}}]}}
    kept = decide(observed(stored(old), stored(new), stored(gone), services=(web("a.example.com"), courier)))
    assert [x.name for x in kept.actions if isinstance(x, RemoveCertificateSecret)] == [old.cert.secret_name]


def test_without_acme_directory_nothing_changes() -> None:
    plain = parse_config(SEED, source="t.toml")
    decision = decide_pass(plain, observed(), now=T0, acme_thumbprint=THUMB)
    assert decision.acme.orders == () and "acme-challenge/ {" not in decision.desired.extensions[0].rendered.text
    assert [a.kind for a in decision.desired.extensions[0].route_table.set_aside] == ["acme"]
    assert dataclasses.asdict(decision.memory.acme.memory) == {"failures": {}}


def test_a_certificate_a_proxy_could_not_load_is_not_served_again() -> None:
    a = issued("a.example.com")
    secret = stored(a)
    served = decide(observed(secret)).desired.extensions[0].route_table.hosts[0]
    assert served.tls == TLSFiles(a.cert.secret_name, a.cert.secret_name)
    refused = PassMemory(undelivered_secrets=frozenset({str(secret["ID"])}))
    fallback = decide(observed(secret), memory=refused).desired.extensions[0].route_table.hosts[0]
    assert fallback.tls is None  # HTTP only, and every other host's config goes through


def test_the_status_says_per_host_what_it_serves_when_it_renews_and_why_it_failed() -> None:
    a = issued("a.example.com")
    failed = decide(observed(stored(a)), outcomes=(Outcome("b.example.com", error="urn:...:connection: refused"),))
    status = acme_status(CONFIG, failed, T0, frozenset())
    hosts = status["acme"]["hosts"]
    assert hosts["a.example.com"]["certificate"] == a.cert.secret_name and hosts["a.example.com"]["failures"] == 0
    assert hosts["b.example.com"]["certificate"] is None and hosts["b.example.com"]["failures"] == 1
    assert hosts["b.example.com"]["retry_at"] == "2026-12-07T06:01:00Z"
    lines = findings_text(status)
    assert any(line.startswith("acme (a.example.com): serves ") and "renews at" in line for line in lines)
    assert any("1 failed order(s) in a row, last: urn:...:connection: refused" in line for line in lines)
    assert acme_status(parse_config(SEED, source="t.toml"), failed, T0, frozenset()) == {}

"""The bounds on ACME orders that labels can cause (`planning/acme_budget`, `acme_hosts`, through
`decide_pass`): hosts per service, orders per hour for the whole account, orders per pass, and which
orders go first when the budget is short. No Docker, no clock."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from swarmgate.models.settings.config import Config, parse_config
from swarmgate.operator.control.acme_wiring import acme_status
from swarmgate.operator.planning.acme_budget import ORDERS_PER_PASS, WINDOW, OrderLedger, Rationed, ration
from swarmgate.operator.planning.acme_plan import Outcome
from swarmgate.operator.planning.certificates import Order
from swarmgate.operator.planning.decide import decide_pass
from tests.factories import service
from tests.unit.test_acme_plan import DIRECTORY, T0, THUMB, issued, observed, stored
from tests.unit.test_plan import SEED

MINUTE = datetime.timedelta(minutes=1)


def config(extra: str = "") -> Config:
    return parse_config(f'ACMEDirectory = "{DIRECTORY}"\n{extra}' + SEED, source="t.toml")


def acme_service(name: str, hosts: list[str]) -> dict[str, object]:
    return service(name, {"com.docker.lb.hosts": ",".join(hosts), "com.docker.lb.port": "8080",
                          "swarmgate.acme": "true"})


def test_a_service_beyond_the_host_cap_is_set_aside_whole_and_orders_nothing() -> None:
    hosts = [f"h{i:02}.example.com" for i in range(21)]
    state = observed(services=(acme_service("greedy", hosts), acme_service("shop", ["shop.example.com"])))
    decision = decide_pass(config(), state, now=T0, acme_thumbprint=THUMB)
    (aside,) = decision.desired.extensions[0].route_table.set_aside
    assert (aside.service, aside.kind) == ("greedy", "acme")
    assert aside.reason == ("label swarmgate.acme=true on 21 hosts, more than ACMEMaxHostsPerService (20): no "
                            "certificate is ordered for any of them (split the service, or raise the limit)")
    assert decision.acme.orders == (Order("shop.example.com", "missing"),)
    # The cap is a config key: at 21 the same service is routed and its hosts are ordered.
    raised = decide_pass(config("ACMEMaxHostsPerService = 21\nACMEOrdersPerHour = 100\n"), state, now=T0,
                         acme_thumbprint=THUMB)
    assert raised.desired.extensions[0].route_table.set_aside == ()
    assert len(raised.acme.orders) == ORDERS_PER_PASS


@pytest.mark.parametrize(("placed", "per_hour", "expected"), [
    pytest.param((), 50, Rationed((Order("a.x", "missing"), Order("b.x", "missing"))), id="budget-left"),
    pytest.param((T0 - 59 * MINUTE,), 2, Rationed((Order("a.x", "missing"),), ("b.x",)), id="one-left-capped-by-hour"),
    pytest.param((T0 - 59 * MINUTE, T0 - MINUTE), 2, Rationed((), ("a.x", "b.x"), T0 + MINUTE), id="spent"),
    pytest.param((T0 - 61 * MINUTE, T0 - 60 * MINUTE), 2, Rationed((Order("a.x", "missing"), Order("b.x", "missing"))),
                 id="window-passed"),
])
def test_orders_per_hour_bound_the_whole_account_and_say_when_they_resume(
        placed: tuple[datetime.datetime, ...], per_hour: int, expected: Rationed) -> None:
    orders = [Order("a.x", "missing"), Order("b.x", "missing")]
    got = ration(orders, OrderLedger(placed), T0, per_hour=per_hour)
    assert got == expected


def test_renewals_and_hosts_that_succeed_go_before_hosts_that_keep_failing() -> None:
    orders = [Order("aaa.attacker.example", "missing", failures=3), Order("new.example", "missing"),
              Order("zzz.shop.example", "renewal")]
    got = ration(orders, OrderLedger(), T0, per_hour=50, per_pass=2)
    assert got == Rationed((Order("new.example", "missing"), Order("zzz.shop.example", "renewal")),
                           ("aaa.attacker.example",))


def test_the_ledger_keeps_only_the_last_hour() -> None:
    ledger = OrderLedger().record(3, T0).record(0, T0 + MINUTE)
    assert ledger.placed == (T0, T0, T0) and ledger.left(T0, 5) == 2
    assert ledger.record(1, T0 + WINDOW).placed == (T0 + WINDOW,)
    assert ledger.left(T0 + WINDOW, 5) == 5


def test_a_pass_orders_within_the_budget_and_the_rest_wait_for_the_hour_to_pass() -> None:
    """Hosts that keep changing names (each new one has no failures yet) cannot order past the budget."""
    limited = config("ACMEOrdersPerHour = 3\n")
    state = observed(services=(acme_service("web", [f"n{i}.example.com" for i in range(5)]),))
    first = decide_pass(limited, state, now=T0, acme_thumbprint=THUMB)
    assert [o.host for o in first.acme.orders] == ["n0.example.com", "n1.example.com", "n2.example.com"]
    assert first.acme.deferred == ("n3.example.com", "n4.example.com")
    # The operator writes what the worker queued into the ledger (control/reconcile.py's `_order`).
    memory = dataclasses.replace(first.memory, acme=first.memory.acme.placed(3, T0))
    failed = tuple(Outcome(o.host, error="refused") for o in first.acme.orders)
    spent = decide_pass(limited, state, memory=memory, now=T0 + MINUTE, acme_thumbprint=THUMB, outcomes=failed)
    assert spent.acme.orders == () and spent.acme.deferred == ("n3.example.com", "n4.example.com")
    assert spent.acme.next_due == T0 + 2 * MINUTE  # the failed hosts' backoff ends first
    waiting = decide_pass(limited, state, memory=spent.memory, now=T0 + 2 * MINUTE, acme_thumbprint=THUMB)
    assert waiting.acme.orders == () and len(waiting.acme.deferred) == 5
    assert waiting.acme.next_due == T0 + WINDOW  # the loop wakes up when the budget frees
    budget = acme_status(limited, spent, T0 + MINUTE, frozenset())["acme"]["budget"]
    assert budget == {"orders_per_hour": 3, "placed_last_hour": 3, "deferred": ["n3.example.com", "n4.example.com"]}
    # An hour later the waiting hosts go first: they have not failed, the others have.
    later = decide_pass(limited, state, memory=spent.memory, now=T0 + WINDOW, acme_thumbprint=THUMB)
    assert [o.host for o in later.acme.orders] == ["n0.example.com", "n3.example.com", "n4.example.com"]


def test_a_renewal_is_not_held_back_by_hosts_that_fail() -> None:
    shop = issued("shop.example.com", T0 - datetime.timedelta(days=61))  # past two thirds of 90 days
    state = observed(stored(shop), services=(acme_service("shop", ["shop.example.com"]),
                                             acme_service("bad", [f"b{i}.example.com" for i in range(5)])))
    decision = decide_pass(config("ACMEOrdersPerHour = 1\n"), state, now=T0, acme_thumbprint=THUMB)
    assert decision.acme.orders == (Order("shop.example.com", "renewal"),)

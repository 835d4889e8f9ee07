"""When the leader hands due ACME orders to its worker (`control/acme_wiring.ChallengeGate`): once
every proxy serves the challenge location, or once the orders have waited `ORDER_WAIT_SECONDS` for
a proxy that never catches up (one stuck proxy must not stop issuance for good). No Docker, no clock."""

from __future__ import annotations

from swarmgate.operator.control.acme_wiring import ORDER_WAIT_SECONDS, ChallengeGate, lagging_extensions
from swarmgate.operator.planning.decide import Reported, decide_pass
from tests.unit.test_acme_plan import CONFIG, T0, THUMB, observed


def test_orders_wait_for_every_proxy_but_not_forever() -> None:
    gate = ChallengeGate()
    assert gate.check(pending=True, served=False, now=100.0) == "wait"
    assert gate.check(pending=True, served=False, now=100.0 + ORDER_WAIT_SECONDS - 1) == "wait"
    assert gate.check(pending=True, served=False, now=100.0 + ORDER_WAIT_SECONDS) == "overdue"
    assert gate.check(pending=True, served=False, now=100.0 + 2 * ORDER_WAIT_SECONDS) == "overdue"
    # Every proxy caught up (or nothing to order): the clock starts over for the next wait.
    assert gate.check(pending=True, served=True, now=500.0) == "served"
    assert gate.check(pending=True, served=False, now=501.0) == "wait"
    assert gate.check(pending=False, served=False, now=502.0) == "served"
    assert gate.check(pending=True, served=False, now=503.0 + ORDER_WAIT_SECONDS - 1) == "wait"


def test_the_log_names_the_extensions_whose_proxies_lag() -> None:
    decision = decide_pass(CONFIG, observed(), now=T0, acme_thumbprint=THUMB)
    (ext,) = decision.desired.extensions
    assert lagging_extensions(decision.desired, Reported(served={ext.name: "0" * 64})) == [ext.name]
    assert lagging_extensions(decision.desired, Reported(served={ext.name: ext.rendered.digest})) == []

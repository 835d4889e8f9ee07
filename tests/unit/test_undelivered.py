"""A certificate secret the courier did not deliver in time is set aside, then tried again
(`planning/undelivered.py`, through `decide_pass`), and the proxies that rejected the config naming it
may be pushed it once more (`ProxyState.allow_repush`); a task's old rejection no longer counts once it
serves a later push (`delivery/status.rejections`). No Docker, no clock."""

from __future__ import annotations

import datetime

from swarmgate.operator.delivery.proxystate import ProxyState
from swarmgate.operator.delivery.status import rejections
from swarmgate.operator.planning.decide import PassMemory, Reported, decide_pass
from swarmgate.operator.planning.undelivered import GRACE, RETRY_AFTER, Undelivered, learn_undelivered
from tests.unit.test_courier import EXTRA, secret_id, state, tls_service
from tests.unit.test_plan import config

T0 = datetime.datetime(2026, 12, 7, 6, 0, tzinfo=datetime.UTC)
SECOND = datetime.timedelta(seconds=1)


def test_an_id_is_set_aside_then_tried_again_and_an_old_rejection_is_not_believed_meanwhile() -> None:
    learnt = learn_undelivered(Undelivered(), {"a"}, {"a", "b"}, T0)
    assert learnt.ids == {"a"} and learnt.retrying_now == frozenset()
    still = learn_undelivered(learnt, {"a"}, {"a", "b"}, T0 + RETRY_AFTER - SECOND)
    assert still.ids == {"a"}
    retried = learn_undelivered(still, {"a"}, {"a", "b"}, T0 + RETRY_AFTER)
    assert retried.ids == frozenset() and retried.retrying_now == {"a"}
    # The proxy's status still shows the rejection from before the retry: not learnt again yet.
    waiting = learn_undelivered(retried, {"a"}, {"a", "b"}, T0 + RETRY_AFTER + GRACE - SECOND)
    assert waiting.ids == frozenset() and waiting.retrying_now == frozenset()
    # A rejection after the grace is the retry's own: set aside again, for another RETRY_AFTER.
    again = learn_undelivered(waiting, {"a"}, {"a", "b"}, T0 + RETRY_AFTER + GRACE)
    assert again.since == {"a": T0 + RETRY_AFTER + GRACE}


def test_a_removed_secret_is_forgotten_and_offline_nothing_is_retried() -> None:
    learnt = learn_undelivered(Undelivered(), {"a", "gone"}, {"a", "gone"}, T0)
    assert learn_undelivered(learnt, (), {"a"}, T0 + SECOND).ids == {"a"}
    offline = learn_undelivered(Undelivered(), {"a"}, {"a"}, None)
    assert learn_undelivered(offline, (), {"a"}, None).ids == {"a"}


def test_the_service_comes_back_after_the_retry_time_and_its_config_names_the_secret_again() -> None:
    observed = state(tls_service("web.crt", "web.key"), secrets=("web.crt", "web.key"))
    late = (f"certificate file not delivered: /run/swarmgate-certs/{secret_id('web.key')}.pem\n"
            "(waited 120 s for the certificate courier to bring them)")
    reported = Reported(rejections=(("default", late),))
    first = decide_pass(config(EXTRA), observed, reported=reported, now=T0)
    table = first.desired.extension("default").route_table
    assert [(s.service, s.kind) for s in table.set_aside] == [("secure", "undelivered_secret")]
    later = decide_pass(config(EXTRA), observed, reported=reported, memory=first.memory, now=T0 + RETRY_AFTER)
    assert later.desired.extension("default").route_table.set_aside == ()
    assert later.memory.undelivered.retrying_now == {secret_id("web.key")}
    assert f"/run/swarmgate-certs/{secret_id('web.key')}.pem" in later.desired.extension("default").rendered.text
    # The next pass, with the same stale rejection in the proxy's status, keeps the service routed.
    after = decide_pass(config(EXTRA), observed, reported=reported, memory=later.memory,
                        now=T0 + RETRY_AFTER + SECOND)
    assert after.desired.extension("default").route_table.set_aside == ()
    # A memory made by hand (no times) is learnt now and tried again RETRY_AFTER later.
    by_hand = PassMemory(undelivered_secrets=frozenset({secret_id("web.key")}))
    assert decide_pass(config(EXTRA), observed, memory=by_hand, now=T0).memory.undelivered_secrets == {
        secret_id("web.key")}


def test_a_rejected_digest_is_pushed_again_once_per_task_when_allowed_and_old_rejections_expire() -> None:
    store = ProxyState(clock=lambda: 100.0)
    assert not store.take_repush("t1", "d" * 64)
    store.allow_repush("d" * 64)
    assert store.take_repush("t1", "d" * 64) and not store.take_repush("t1", "d" * 64)
    assert store.take_repush("t2", "d" * 64)
    store.record_status(cluster="default", task="t1", node="n", hostname="h", serving="", rejected="d" * 64,
                        message="certificate file not delivered: /run/swarmgate-certs/abc.pem")
    assert rejections(store) == (("default", "certificate file not delivered: /run/swarmgate-certs/abc.pem"),)
    store.record_status(cluster="default", task="t1", node="n", hostname="h", serving="d" * 64)
    assert rejections(store) == ()  # it serves a later push: the old rejection blames nothing now

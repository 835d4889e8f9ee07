"""One pass's decision (`planning/decide.decide_pass`), the function the live pass and `plan`,
`status`, `render`, `routes` all call; and `ChangeLog`, how the operator says each change once.
Pure, no Docker."""

from __future__ import annotations

from swarmgate.operator.planning.actions import PublishProxyConfig
from swarmgate.operator.planning.decide import PassMemory, Reported, decide_pass, routes_digest
from swarmgate.operator.planning.desired import compute_desired
from swarmgate.operator.planning.plan import plan
from swarmgate.operator.telemetry.changes import ChangeLog
from tests.unit.test_learn_secrets import BROKEN, CONFIG, MESSAGE, observed


def test_a_first_pass_decides_what_the_pipeline_computes() -> None:
    state = observed()
    decision = decide_pass(CONFIG, state)
    desired = compute_desired(CONFIG, state)
    assert decision.desired == desired
    assert decision.actions == plan(desired, state, published={})
    assert decision.routes_digest == routes_digest(desired)
    assert decision.memory == PassMemory()


def test_what_was_published_is_remembered_and_not_published_again() -> None:
    state = observed()
    first = decide_pass(CONFIG, state)
    published = [a for a in first.actions if isinstance(a, PublishProxyConfig)]
    assert [a.extension for a in published] == ["default"]
    memory = first.memory.after_apply(first.actions)
    assert memory.published == {"default": published[0].digest}
    again = decide_pass(CONFIG, state, memory=memory)
    assert not any(isinstance(a, PublishProxyConfig) for a in again.actions)
    # What the proxies say they serve counts the same (what `plan` asks them).
    surveyed = decide_pass(CONFIG, state, reported=Reported(published=memory.published))
    assert surveyed.actions == again.actions


def test_a_rejection_is_learnt_once_and_kept_in_memory_while_the_secret_exists() -> None:
    state = observed()
    learnt = decide_pass(CONFIG, state, reported=Reported(rejections=(("default", MESSAGE),)))
    assert learnt.memory.unusable_secrets == {BROKEN["ID"]}
    later = decide_pass(CONFIG, state, memory=learnt.memory)  # the proxies no longer repeat it
    assert later.desired == learnt.desired
    assert [s.service for s in later.desired.extension("default").route_table.set_aside] == ["bad"]


def test_an_nginx_verdict_holds_the_extension() -> None:
    decision = decide_pass(CONFIG, observed(), verdict=lambda _text: "nginx: [emerg] no")
    assert [getattr(a, "hold", None) for a in decision.actions] == ["nginx_rejected"]


def test_a_change_log_says_what_appeared_and_what_ended() -> None:
    log: ChangeLog[str] = ChangeLog()
    first = log.update(["a", "b"])
    assert (first.appeared, first.ended) == (frozenset({"a", "b"}), frozenset())
    same = log.update(["b", "a"])
    assert (same.appeared, same.ended) == (frozenset(), frozenset())
    moved = log.update(["b", "c"])
    assert (moved.appeared, moved.ended, log.current) == (frozenset({"c"}), frozenset({"a"}), frozenset({"b", "c"}))

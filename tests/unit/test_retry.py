"""The loop's timing policy and retry logic, driven by scripted outcomes (no Docker, no sleeping)."""

from __future__ import annotations

import threading

import pytest

from swarmgate.errors import ConfigError, DocumentError, RenderError, TemporaryError, TerminalError
from swarmgate.operator.control.loop import DockerHealth, Wakeup, run_loop
from swarmgate.operator.planning.retry import Outcome, Schedule, classify


def delays(outcomes: list[Outcome]) -> list[float]:
    schedule = Schedule(resync=3.0, settle=0)  # the doubling alone; settle is tested below
    return [schedule.next_delay(o) for o in outcomes]


C, X, T, F = Outcome.CONVERGED, Outcome.CHANGED, Outcome.TEMPORARY_ERROR, Outcome.TERMINAL_ERROR


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        pytest.param([C, C, C], [3.0, 3.0, 3.0], id="converged-waits-for-resync"),
        pytest.param([X, C, C, C, C], [0.25, 0.5, 1.0, 2.0, 3.0], id="change-polls-fast-then-slows-to-resync"),
        pytest.param([X, C, X, C], [0.25, 0.5, 0.25, 0.5], id="new-change-resets-fast-polling"),
        pytest.param([T, T, T, T, T, T, T, T], [0.5, 1, 2, 4, 8, 16, 30, 30], id="errors-back-off-capped"),
        pytest.param([T, T, C], [0.5, 1.0, 3.0], id="success-ends-backoff"),
        pytest.param([T, T, T, X], [0.5, 1.0, 2.0, 0.25], id="recovery-with-changes-polls-fast"),
        pytest.param([X, F], [0.25, 3.0], id="terminal-error-waits-for-resync"),
    ],
)
def test_schedule_delays(outcomes: list[Outcome], expected: list[float]) -> None:
    assert delays(outcomes) == expected


def test_kick_after_event_makes_the_next_wait_short() -> None:
    schedule = Schedule(resync=3.0, settle=0)
    assert schedule.next_delay(C) == 3.0
    schedule.kick()
    assert schedule.next_delay(C) == 0.5


def test_after_a_change_or_an_event_polls_stay_fast_for_settle_passes_then_slow_down() -> None:
    schedule = Schedule(resync=3.0, settle=3)
    assert [schedule.next_delay(o) for o in [X, C, C, C, C, C, C]] == [0.25, 0.25, 0.25, 0.25, 0.5, 1.0, 2.0]
    schedule.kick()
    assert [schedule.next_delay(C) for _ in range(5)] == [0.25, 0.25, 0.25, 0.5, 1.0]


def test_a_fast_poll_is_never_shorter_than_the_pass_before_it() -> None:
    schedule = Schedule(resync=3.0)
    assert schedule.next_delay(X, took=2.0) == 2.0  # 10,000 services: not back to back
    assert schedule.next_delay(C, took=0.1) == 0.25
    assert Schedule(resync=3.0).next_delay(C, took=5.0) == 3.0  # the resync period stays as it is


def test_wakeup_coalesces_many_events_into_one() -> None:
    wakeup = Wakeup()
    for _ in range(100):
        wakeup.set()
    assert wakeup.wait(0.0) is True
    assert wakeup.wait(0.0) is False


class ScriptedPass:
    """A fake reconciler that plays back outcomes, then asks the loop to stop."""

    def __init__(self, script: list[bool | Exception], stop: threading.Event) -> None:
        self.script = list(script)
        self.calls = 0
        self.stop = stop

    def __call__(self) -> bool:
        self.calls += 1
        step = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if isinstance(step, Exception):
            raise step
        return step


def test_loop_retries_temporary_errors_and_records_each_outcome() -> None:
    stop = threading.Event()
    runner = ScriptedPass([TemporaryError("docker unreachable"), TemporaryError("again"), True, False], stop)
    seen: list[Outcome] = []
    health = DockerHealth()
    run_loop(runner, schedule=Schedule(resync=0.01, fast=0.001, min_backoff=0.001, max_backoff=0.004),
             wakeup=Wakeup(), stop=stop, health=health, on_outcome=lambda o, _s: seen.append(o))
    assert seen == [T, T, X, C]
    assert runner.calls == 4
    assert health.reachable is True


def test_loop_keeps_running_after_a_terminal_error() -> None:
    stop = threading.Event()
    runner = ScriptedPass([TerminalError("bad"), False], stop)
    seen: list[Outcome] = []
    run_loop(runner, schedule=Schedule(resync=0.01), wakeup=Wakeup(), stop=stop, health=DockerHealth(),
             on_outcome=lambda o, _s: seen.append(o))
    assert seen == [F, C]


def test_event_during_resync_wait_starts_the_next_pass_early() -> None:
    stop = threading.Event()
    wakeup = Wakeup()
    calls: list[float] = []

    def run_pass() -> bool:
        calls.append(0.0)
        if len(calls) == 1:
            threading.Timer(0.05, wakeup.set).start()
        else:
            stop.set()
        return False

    thread = threading.Thread(target=run_loop, kwargs={
        "run_pass": run_pass, "schedule": Schedule(resync=60.0), "wakeup": wakeup, "stop": stop,
        "health": DockerHealth()})
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "the event did not cut the 60 s resync wait short"
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("changed", "error", "expected"),
    [
        pytest.param(False, None, Outcome.CONVERGED, id="nothing-to-do"),
        pytest.param(True, None, Outcome.CHANGED, id="wrote-or-routes-moved"),
        pytest.param(True, TemporaryError("docker unreachable"), Outcome.TEMPORARY_ERROR, id="temporary-retried"),
        pytest.param(False, TerminalError("bad document"), Outcome.TERMINAL_ERROR, id="terminal-not-retried"),
        pytest.param(False, DocumentError("Spec: expected an object"), Outcome.TERMINAL_ERROR,
                     id="unreadable-docker-document-is-terminal"),
        pytest.param(False, RenderError("unsafe value"), Outcome.TERMINAL_ERROR, id="escaped-render-error-terminal"),
        pytest.param(False, ConfigError("bad key"), Outcome.TERMINAL_ERROR, id="config-error-mid-run-terminal"),
        pytest.param(False, KeyError("bug"), Outcome.TERMINAL_ERROR, id="a-bug-is-terminal-not-a-spin"),
    ],
)
def test_every_pass_result_maps_to_one_outcome(changed: bool, error: BaseException | None,
                                               expected: Outcome) -> None:
    assert classify(changed=changed, error=error) is expected


def test_a_pass_that_asks_to_run_again_sooner_than_the_resync_is_requeued_then() -> None:
    schedule = Schedule(resync=3600.0)
    assert schedule.next_delay(X, requeue_after=120.0) == 0.25  # a change still polls fast
    idle = Schedule(resync=3600.0)
    assert idle.next_delay(Outcome.CONVERGED) == 3600.0
    assert idle.next_delay(Outcome.CONVERGED, requeue_after=120.0) == 120.0  # a renewal due in 2 minutes
    assert idle.next_delay(Outcome.CONVERGED, requeue_after=0.0) == 0.25  # due now: soon, not a spin
    # Backing off after Docker errors, the backoff rules; the requeue waits for Docker to answer.
    failing = Schedule(resync=3600.0, min_backoff=5.0)
    assert failing.next_delay(T, requeue_after=1.0) == 5.0


def test_the_loop_wakes_up_for_a_requeue_without_any_event() -> None:
    stop = threading.Event()
    calls: list[float] = []

    def run_pass() -> bool:
        calls.append(0.0)
        if len(calls) == 2:
            stop.set()
        return False

    thread = threading.Thread(target=run_loop, kwargs={
        "run_pass": run_pass, "schedule": Schedule(resync=60.0, settle=0), "wakeup": Wakeup(), "stop": stop,
        "health": DockerHealth(), "requeue_after": lambda: 0.05})
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "no pass ran at the requeue time within the 60 s resync"
    assert len(calls) == 2

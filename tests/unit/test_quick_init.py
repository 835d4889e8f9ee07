"""`quick_init`: the same frozen dataclass, built through a cheaper `__init__`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from swarmgate.models.quick_init import quick_init
from swarmgate.models.routing.route_types import PathRoute, Upstream
from swarmgate.models.swarm.tasks import Task


@dataclass(frozen=True)
class Plain:
    name: str
    port: int = 80
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)


@quick_init
@dataclass(frozen=True)
class Quick:
    name: str
    port: int = 80
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = field(default_factory=dict)


@pytest.mark.parametrize(("args", "kwargs"), [
    (("a",), {}),
    (("a", 8080), {}),
    (("a",), {"tags": ("x",), "extra": {"k": 1}}),
    ((), {"name": "b", "port": 1}),
], ids=["defaults", "positional", "keywords-and-factory", "all-keywords"])
def test_builds_the_same_values_as_the_dataclass_init(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    quick, plain = Quick(*args, **kwargs), Plain(*args, **kwargs)  # type: ignore[arg-type]
    assert dataclasses.asdict(quick) == dataclasses.asdict(plain)
    assert repr(quick).removeprefix("Quick") == repr(plain).removeprefix("Plain")


def test_stays_frozen_hashable_and_replaceable() -> None:
    one = Quick("a", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.port = 2  # type: ignore[misc]
    assert one == Quick("a", 1)
    up = Upstream(address="10.0.0.1", port=80, task_id="t", node_id="n", service="s")
    assert hash(up) == hash(Upstream("10.0.0.1", 80, "t", "n", "s")) and {up: 1}[dataclasses.replace(up)] == 1
    assert dataclasses.replace(one, port=2) == Quick("a", 2)
    assert Quick("a").extra is not Quick("a").extra  # a fresh default per instance, as field(default_factory)


def test_a_missing_or_unknown_argument_fails_as_before() -> None:
    with pytest.raises(TypeError):
        Quick()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Quick("a", colour="red")  # type: ignore[call-arg]


def test_refuses_what_it_does_not_support() -> None:
    with pytest.raises(TypeError, match="not a frozen dataclass"):
        quick_init(dataclass(type("Open", (), {"__annotations__": {"x": "int"}})))

    @dataclass(frozen=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError, match="__post_init__"):
        quick_init(Checked)


def test_the_hot_types_use_it() -> None:
    # The snapshot's and the route table's types built per task and per pool.
    for cls in (Task, Upstream, PathRoute):
        assert cls.__init__.__qualname__ == f"{cls.__qualname__}.__init__"
        assert "_setattr" in cls.__init__.__code__.co_names

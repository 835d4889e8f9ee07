"""A running task whose host ports Swarm stopped listing keeps the ports it was seen with."""

from __future__ import annotations

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.port_memory import recall_ports
from swarmgate.models.swarm.ports import PortBinding
from tests.factories import node, service, task

DEMO = service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
NODES = [node("wrk-0", "198.18.0.16")]


def snapshot(*, ports: dict[int, int] | None, state: str = "running", task_id: str = "t1",
             desired: str = "running") -> ObservedState:
    return ObservedState.from_api(services=[DEMO], tasks=[task(DEMO, "wrk-0", id=task_id, ports=ports, state=state,
                                                               desired=desired)], nodes=NODES)


def upstreams(observed: ObservedState) -> list[tuple[str, int]]:
    table = build_route_table(observed, Extension())
    return [(u.address, u.port) for h in table.hosts for p in h.paths for u in p.upstreams]


def test_a_task_listed_without_its_ports_is_routed_on_the_ports_seen_before() -> None:
    first = recall_ports(snapshot(ports={8080: 30001}), {})
    assert first.recalled == () and first.memory == {"t1": (PortBinding(8080, 30001, "tcp", "host"),) * 2}  # as listed

    forgotten = snapshot(ports=None)
    assert upstreams(forgotten) == []  # what the snapshot alone would route: nothing
    second = recall_ports(forgotten, first.memory)
    assert second.recalled == ("t1",)
    assert upstreams(second.observed) == [("198.18.0.16", 30001)]
    # Still forgotten a pass later: still remembered.
    assert upstreams(recall_ports(forgotten, second.memory).observed) == [("198.18.0.16", 30001)]


def test_only_running_tasks_are_remembered_and_a_new_task_is_not_given_old_ports() -> None:
    seen = recall_ports(snapshot(ports={8080: 30001}), {}).memory
    stopped = recall_ports(snapshot(ports=None, state="shutdown"), seen)
    assert stopped.memory == {} and stopped.recalled == ()
    # A task Swarm made since (another ID) starts with no ports known: nothing is made up for it.
    other = recall_ports(snapshot(ports=None, task_id="t2"), seen)
    assert other.recalled == () and upstreams(other.observed) == []
    assert other.memory == {}


def test_a_task_swarm_is_stopping_keeps_its_ports_until_it_stops_without_being_reported() -> None:
    # Swarm empties a stopping task's PortStatus a second before its container gets SIGTERM; while
    # the service has no other task, that task is still its upstream (one task rolled stop-first).
    seen = recall_ports(snapshot(ports={8080: 30001}), {}).memory
    stopping = recall_ports(snapshot(ports=None, desired="shutdown"), seen)
    assert stopping.recalled == () and stopping.memory == seen
    assert upstreams(stopping.observed) == [("198.18.0.16", 30001)]
    stopped = recall_ports(snapshot(ports=None, state="shutdown", desired="shutdown"), stopping.memory)
    assert stopped.memory == {} and upstreams(stopped.observed) == []

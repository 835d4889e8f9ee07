"""Host ports Swarm forgot: a running task's `PortStatus`, as last seen, kept while the task runs.

A task published in host mode with a dynamic port (`--publish mode=host,target=8080`) is reachable
only on the port Swarm lists in its `Status.PortStatus`. On the lab, after the manager whose
dispatcher a node used was lost, Swarm went on listing that node's running tasks with an empty
`PortStatus`: the containers kept their ports, but a snapshot no longer says which. Taken at its
word, the snapshot drops those tasks from their upstreams, and a service with one task on that node
answers 503 while its container serves happily.

A task's host ports cannot change while it runs (a new port means a new container, hence a new
task), so the ports seen earlier for the same task ID are still the truth. `recall_ports` fills them
in for running tasks whose list came back empty, and remembers only tasks that are running now, so
the memory never outgrows the Swarm. It lives as long as the operator process: a new operator has
not seen the ports, and routes such a task again once Swarm lists them.

Swarm also empties the `PortStatus` of every task it is stopping (desired state `shutdown`), about a
second before the container gets its stop signal; measured on the lab, with one task rolled
stop-first. Such a task still answers on its port, and it stays a service's upstream while the
service has no other (models/routing/routes.py), so its ports are filled in too. That is Swarm's
normal way, not a lost listing: it is not reported in `recalled`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ports import PortBinding
from swarmgate.models.swarm.tasks import Task


@dataclass(frozen=True)
class Recalled:
    """The snapshot with forgotten ports filled in, what to remember for the next one, and which
    tasks Swarm wants running needed it (task IDs, sorted)."""

    observed: ObservedState
    memory: Mapping[str, tuple[PortBinding, ...]]
    recalled: tuple[str, ...]


def recall_ports(observed: ObservedState, memory: Mapping[str, tuple[PortBinding, ...]]) -> Recalled:
    # Runs every pass over every task (30,000 at 10,000 services): the snapshot is copied only in
    # the rare pass where some task needs its ports filled in.
    kept: dict[str, tuple[PortBinding, ...]] = {}
    filled: dict[str, Task] = {}
    for task in observed.tasks:
        if task.state != "running":
            continue
        if task.ports:
            kept[task.id] = task.ports
        elif task.id in memory:
            kept[task.id] = memory[task.id]
            filled[task.id] = dataclasses.replace(task, ports=memory[task.id])
    if not filled:
        return Recalled(observed, kept, ())
    tasks = tuple(filled.get(task.id, task) for task in observed.tasks)
    recalled = tuple(sorted(t.id for t in filled.values() if t.desired_state == "running"))
    return Recalled(dataclasses.replace(observed, tasks=tasks), kept, recalled)

"""The operator faults on the seed deployment, under load on both LB nodes (lab; see tests/lab/faults.py).

Each scenario asserts its bar: 0 failed requests (on the LB node the fault does not
touch, where the fault kills that node's own proxy), 0 proxy tasks replaced beyond the one a fault
kills, an unchanged proxy spec version, for two operators 0 Swarm writes after convergence (from
Docker's event stream), and a new route that arrives at all (15 s, 30 s after a manager loss: a
frozen routing layer must not pass). Times are only reported (bench/faults.md), never asserted
against the table's bounds. The windows are shorter than `make faults`'s; one module runs both.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab import faults, shared_seed
from tests.lab.cluster import Lab
from tests.lab.seed_deployment import Seed

# It takes the kept deployment but leaves none behind: its rows stop, freeze and restart nodes and
# the operator, and a deployment with that history (old operator tasks on restarted managers, tasks
# on a worker that lost power) made later modules' reads fail (`docker service logs` of a gone task).
pytestmark = [pytest.mark.lab, pytest.mark.shared_seed(keeps=False)]


@pytest.fixture(scope="module")
def seed(lab: Lab) -> Iterator[Seed]:
    """The seed deployment (the one a previous module kept, if at rest); afterwards every node back and
    every fault object and the deployment gone."""
    assert len(lab.lb_nodes) >= 2 and len(lab.managers) >= 3, "the fault scenarios need the seed's cluster"
    seed = Seed(lab)
    try:
        shared_seed.acquire(seed)
        yield seed
    finally:
        seed.restore()


@pytest.mark.parametrize("spec", faults.SCENARIOS, ids=[s.name for s in faults.SCENARIOS])
def test_fault_costs_no_request_and_replaces_no_proxy(seed: Seed, spec: faults.Spec) -> None:
    result = faults.run_scenario(seed, spec, faults.TEST)
    found = faults.problems(result)
    assert not found, f"{spec.title}: " + "; ".join(found) + f" (notes: {'; '.join(result.notes)})"

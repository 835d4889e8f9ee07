"""Backend changes cost no request (lab; the scenarios are tests/lab/rolls.py).

On the seed deployment, a routed backend of 3 tasks is rolled (`service update --force`, stop-first
and start-first), scaled 3 -> 1 -> 3, and has a worker holding one of its tasks drained (then set
active again), while 25 requests/s go through every LB node to it: 0 requests may fail. Once in host
mode (the seed's way, `--publish mode=host,target=8080`), once on an overlay network (task mode,
Interlock's default), where a new task can stay unknown to one LB node's overlay: nginx then fails
over to another task after 1.5 s (see docs/labels.md, Overlay networks). `make rolls` runs the same
with longer windows, plus one task rolled both ways (where stop-first loses requests no retry can
save), into bench/rolls.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.lab import rolls, shared_seed
from tests.lab.cluster import Lab
from tests.lab.seed_deployment import Seed

# The proxy joins the overlay networks made here, which go only once it has: the deployment goes too.
pytestmark = [pytest.mark.lab, pytest.mark.shared_seed(keeps=False)]


@pytest.fixture(scope="module")
def seed(lab: Lab) -> Iterator[Seed]:
    assert len(lab.lb_nodes) >= 2 and len(lab.plain_workers) >= 2, "the rolls need the seed's cluster"
    with rolls.deployment(lab) as seed:
        shared_seed.acquire(seed)
        seed.ensure_baseline(quiet=rolls.TEST.before, patience=10)
        yield seed


def test_rolls_scales_and_drains_cost_no_request(seed: Seed) -> None:
    with rolls.backend(seed, 3, rolls.TEST) as b:
        results = [rolls.run_change(b, spec, rolls.TEST) for spec in rolls.HOST_MODE]
    found = {r.scenario: rolls.problems(r) for r in results}
    assert not any(found.values()), {k: v for k, v in found.items() if v}
    assert all(r.total for r in results)


def test_overlay_rolls_scales_and_drains_cost_no_request(seed: Seed) -> None:
    with rolls.backend(seed, 3, rolls.TEST, overlay=True) as b:
        results = [rolls.run_change(b, spec, rolls.TEST) for spec in rolls.OVERLAY]
    found = {r.scenario: rolls.problems(r) for r in results}
    assert not any(found.values()), {k: v for k, v in found.items() if v}
    assert all(r.total for r in results)

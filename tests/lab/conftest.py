"""The `lab` fixture: the running local real-Swarm lab, as tests and other fixtures see it.

    def test_something(lab: Lab) -> None:
        mgr = lab.manager_client()            # docker.DockerClient of mgr-0 (Swarm API)

The fixture brings the default lab up (`lab/lab.py up`) when none is running, and reads it; it never
tears the lab down (tests/lifecycle does that, last). `Lab` and the reading of the lab's files live
in `tests.lab.cluster`: import them from there.
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.lab import shared_seed
from tests.lab.cluster import Lab, ensure_lab_up


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield ensure_lab_up()


@pytest.fixture
def client(lab: Lab) -> Iterator[docker.DockerClient]:
    """A client of a manager's engine, closed after the test (a test module may override it)."""
    c = lab.manager_client()
    yield c
    c.close()


# -- the seed's deployment shared by consecutive modules (tests/lab/shared_seed.py) ----------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{shared_seed.MARK}(keeps): uses the seed's deployment that "
                                       "tests/lab/shared_seed.py hands from module to module; keeps=True: "
                                       "leaves it for the next one; fresh=True: removes it first")


def _keeps(item: pytest.Item) -> bool | None:
    mark = item.get_closest_marker(shared_seed.MARK)
    return None if mark is None else bool(mark.kwargs.get("keeps", False))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that use the shared seed deployment run one after the other, where the first of
    them was collected: first their tests that do not use it, then a module that deploys it itself
    (fresh=True), then the modules that keep it, then those that remove it. Each module's tests stay
    together and in their order."""
    shared_modules = {item.path for item in items if _keeps(item) is not None}
    group = [item for item in items if item.path in shared_modules]
    if not group:
        return
    first = items.index(group[0])
    rest = [item for item in items if item.path not in shared_modules]

    def rank(item: pytest.Item) -> int:
        keeps = _keeps(item)
        if keeps is None:
            return 0
        mark = item.get_closest_marker(shared_seed.MARK)
        fresh = mark is not None and mark.kwargs.get("fresh", False)  # it removes the deployment first
        return 1 if fresh else 2 if keeps else 3

    items[:] = rest[:first] + sorted(group, key=rank) + rest[first:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield  # the test's fixtures are finalized: a module that keeps the deployment has said so
    shared_seed.release_unless_next_shares(nextitem)

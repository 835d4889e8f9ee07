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

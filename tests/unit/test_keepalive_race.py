"""The upstream keep-alive race, made deterministic, in a real nginx on loopback: swarmgate's render
(`swarmgate render`'s code, as bench/keepalive_race.py runs it) before bench/idle_backend.py in its
worst case, a backend that stops serving an idle connection at its timeout and never sends the FIN
that would tell nginx. Only nginx's own idle timeout then protects a request; a POST sent on such a
connection fails (nginx rightly never retries it), a GET is retried on a fresh one.

Each case idles its connection a little longer than the backend's timeout, twice: GET, then POST."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.keepalive_race import Case, launch, request
from bench.peer_configs import LOOPBACK
from bench.peers import servers

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None,
                                reason="needs nginx and openssl")

RACY = Case("racy", "nginx's own idle timeout", 1.0, keepalive_timeout="60s")
DEFAULT = Case("default", "swarmgate's defaults, a gunicorn-like backend", 2.0)
LABELLED = Case("labelled", "a backend that closes after 1 s, and says so", 1.0, label="1s")
OVER = 0.5  # seconds past the backend's idle timeout at which the next request goes (a busy machine fires timers late)


async def idle_then(port: int, case: Case, methods: Sequence[str]) -> list[int]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        statuses = [await request(reader, writer, "GET")]  # opens the upstream connection
        for method in methods:
            await asyncio.sleep(case.backend_idle + OVER)
            statuses.append(await request(reader, writer, method))
        return statuses
    finally:
        writer.close()


def test_nginx_closes_idle_upstream_connections_before_the_backend_by_default_and_by_label(tmp_path: Path) -> None:
    cases = (RACY, DEFAULT, LABELLED)
    with servers() as started:
        ports = [launch(case, tmp_path, started, fin_delay="never").port for case in cases]

        async def every_case() -> list[list[int]]:
            return list(await asyncio.gather(*(idle_then(p, c, ("GET", "POST")) for p, c in zip(ports, cases,
                                                                                                 strict=True))))

        racy, default, labelled = asyncio.run(every_case())
    # nginx's own 60 s: both requests go on a connection the backend gave up; the GET is retried on a
    # fresh connection, the POST is not and fails with nginx's 502.
    assert racy == [200, 200, -502]
    # swarmgate's 1.5 s is below the backend's 2 s, and the label's 0.5 s below its 1 s: nginx had
    # already closed the idle connection, so every request went on a fresh one.
    assert default == [200, 200, 200]
    assert labelled == [200, 200, 200]

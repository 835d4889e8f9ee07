"""Helpers that every kind of test shares: waiting for a condition, a free port, checking output
against a golden file, and a window over Docker's event stream.

A test that must show something did *not* happen (the operator wrote nothing, left a service alone)
does not sleep and look: it opens an `EventWindow` on Docker's own record of writes, lets the
operator do a counted amount of work (passes it reports, not seconds), and reads what the window
saw. Docker stamps every event with `timeNano`; the window asks the API for exactly the span between
its opening and its closing (`since`/`until` take nanoseconds) and keeps the events stamped inside it.
"""

from __future__ import annotations

import http.server
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker

T = TypeVar("T")

WRITES = frozenset({"create", "update", "remove"})


def host_port(task: dict[str, Any], target: int) -> int | None:
    """The host port where a task's host-mode publish of `target` answers on its node's IPv4 address.
    Docker 20.10 binds it on IPv4, then IPv6, and lists both in `PortStatus` in that order. The two
    are allocated apart and differ when the IPv4 port was taken: the IPv6 twin's port, asked on the
    IPv4 address, reaches whatever holds it there (swarmgate's `Task.host_ports` makes the same choice)."""
    for p in task["Status"].get("PortStatus", {}).get("Ports", []):
        if p.get("TargetPort") == target and p.get("PublishMode") == "host" and p.get("PublishedPort"):
            return int(p["PublishedPort"])
    return None


def answer(handler: http.server.BaseHTTPRequestHandler, body: bytes, status: int = 200) -> None:
    """A loopback test task's whole reply: `status` and `body`, with its length."""
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice; free until someone binds it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout: float, interval: float = 0.2,
             what: str | Callable[[], str] = "") -> T:
    """Poll until `check()` returns something truthy and return it; on timeout raise `TimeoutError`
    naming `what` and, if the last poll raised, its error.

    A poll that raises counts as "not yet" (the thing waited for may not exist yet, or a manager that
    just lost its leader answers errors for a moment). `check` runs once more after the deadline, so a
    slow check still gets its last look. `what` may be a callable, read only on failure, so the message
    can show the state the last check saw (a string built at the call would show the state before the
    first)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = None  # an error of an earlier poll is not why the latest one said no
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise TimeoutError(f"timed out after {timeout}s waiting for {described or check}"
                               + (f": {last!r}" if last else ""))
        time.sleep(interval)


GOLDEN_SWITCH = "SWARMGATE_UPDATE_GOLDEN"


def check_golden(path: Path, actual: str) -> None:
    """Assert that `actual` is the golden file's text; with `SWARMGATE_UPDATE_GOLDEN=1`, write it first.

    Regenerating is a deliberate act: run the tests with the switch, then read the diff in review."""
    if os.environ.get(GOLDEN_SWITCH) == "1":
        path.write_text(actual)
    assert actual == path.read_text(), f"{path.name} changed; regenerate with {GOLDEN_SWITCH}=1 and review the diff"


def events_between(client: docker.DockerClient, opened_ns: int, closed_ns: int,
                   types: tuple[str, ...]) -> list[dict[str, Any]]:
    """Docker's events of `types` stamped (`timeNano`) in [opened_ns, closed_ns], oldest first; blocks
    until `closed_ns` has passed. The API takes `seconds.nanoseconds` bounds (the SDK's stub says int,
    and a datetime it would cut to whole seconds): whole seconds would make `until` wait up to two
    seconds past the window. The stamps are checked all the same."""
    def bound(ns: int) -> str:
        return f"{ns // 10**9}.{ns % 10**9:09d}"

    stream = client.api.events(since=bound(opened_ns), until=bound(closed_ns),  # type: ignore[call-overload]
                               decode=True, filters={"type": list(types)})
    return [e for e in stream if opened_ns <= int(e.get("timeNano", 0)) <= closed_ns]


@dataclass
class EventWindow:
    """Docker's events of some object types between `opened_ns` and `closed_ns` (Unix nanoseconds)."""

    client: docker.DockerClient
    types: tuple[str, ...]
    opened_ns: int = field(default_factory=time.time_ns)
    closed_ns: int | None = None

    def close(self) -> None:
        if self.closed_ns is None:
            self.closed_ns = time.time_ns()

    def events(self) -> list[dict[str, Any]]:
        """Every event in the window, oldest first. The window must be closed."""
        assert self.closed_ns is not None, "read the window once it is closed"
        return events_between(self.client, self.opened_ns, self.closed_ns, self.types)

    def writes(self) -> list[dict[str, Any]]:
        """Creations, updates and removals in the window."""
        return [e for e in self.events() if e.get("Action") in WRITES]

    def writes_to(self, name: str) -> list[dict[str, Any]]:
        """Writes to the object of that name (Docker puts it in the actor's attributes)."""
        return [e for e in self.writes() if e.get("Actor", {}).get("Attributes", {}).get("name") == name]


@contextmanager
def event_window(client: docker.DockerClient, *, types: tuple[str, ...] = ("service", "config", "secret"),
                 ) -> Iterator[EventWindow]:
    """`with event_window(client) as window: ...` then read `window.writes()` after the block."""
    window = EventWindow(client, types)
    try:
        yield window
    finally:
        window.close()

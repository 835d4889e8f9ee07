"""HTTP to lab nodes only, through the lab bridge only (used by every lab test).

A request to a lab address while the lab bridge is missing would leave the machine by the default
route; test traffic must only reach lab nodes or loopback, so every request first checks that the
kernel routes the address through the lab's bridge.
"""

from __future__ import annotations

import http.client
import ipaddress
import subprocess
from dataclasses import dataclass

LAB_BRIDGE = "sglab0"


def assert_lab_route(address: str) -> None:
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return
    route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True, check=False).stdout
    # "local ..." is the host's own address on the bridge (where a host-process operator listens).
    if f" dev {LAB_BRIDGE} " not in f" {route} " and not route.startswith("local "):
        raise AssertionError(f"{address} is not routed through the lab bridge {LAB_BRIDGE}: {route.strip()!r}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def get(
    address: str,
    path: str = "/",
    *,
    port: int = 80,
    host: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> Response:
    """One GET to a lab node (or loopback); header names come back lower-cased."""
    assert_lab_route(address)
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        sent = dict(headers or {})
        if host is not None:
            sent["Host"] = host
        conn.request("GET", path, headers=sent)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()

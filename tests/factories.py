"""Keyword factories for Docker Engine API JSON (API 1.41 shapes) used by the pure tests.

Each returns the dict that `GET /services`, `/tasks` or `/nodes` would return for one object, with
only the fields a test cares about given as keywords. Shapes follow what Docker 20.10 returns, e.g.
a host-mode port listed twice in a task's `PortStatus`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

CREATED = "2026-11-01T10:00:00.123456789Z"


def _id(kind: str, name: str) -> str:
    return hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()[:25]


def service(
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    id: str | None = None,
    host_ports: Sequence[int] = (8080,),
    created_at: str = CREATED,
    replicas: int = 1,
    version: int = 10,
    env: Sequence[str] = (),
    constraints: Sequence[str] = (),
    config_names: Sequence[str] = (),
    networks: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A service; `networks` maps each overlay network's ID it is on to its virtual IP there."""
    ports = [{"Protocol": "tcp", "TargetPort": p, "PublishMode": "host"} for p in host_ports]
    container: dict[str, Any] = {"Image": "demo:latest", "Init": False}
    if env:
        container["Env"] = list(env)
    if config_names:
        container["Configs"] = [{"File": {"Name": f"/{n}", "UID": "0", "GID": "0", "Mode": 292},
                                 "ConfigID": _id("config", n), "ConfigName": n} for n in config_names]
    spec: dict[str, Any] = {
        "Name": name,
        "Labels": dict(labels or {}),
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": {}, "Reservations": {}},
            "RestartPolicy": {"Condition": "any", "Delay": 5000000000, "MaxAttempts": 0},
            "Placement": {"Constraints": list(constraints)} if constraints else {},
            "ForceUpdate": 0,
            "Runtime": "container",
        },
        "Mode": {"Replicated": {"Replicas": replicas}},
        "EndpointSpec": {"Mode": "vip", "Ports": ports},
    }
    endpoint: dict[str, Any] = {"Spec": {"Mode": "vip", "Ports": ports}, "Ports": [
        {"Protocol": "tcp", "TargetPort": p, "PublishMode": "host"} for p in host_ports
    ]}
    if networks:
        spec["TaskTemplate"]["Networks"] = [{"Target": network_id} for network_id in networks]
        endpoint["VirtualIPs"] = [{"NetworkID": network_id, "Addr": f"{vip}/24"}
                                  for network_id, vip in networks.items()]
    return {
        "ID": id or _id("service", name),
        "Version": {"Index": version},
        "CreatedAt": created_at,
        "UpdatedAt": created_at,
        "Spec": spec,
        "Endpoint": endpoint,
    }


def task(
    svc: Mapping[str, Any],
    node_id: str,
    *,
    slot: int = 1,
    id: str | None = None,
    state: str = "running",
    desired: str = "running",
    ports: Mapping[int, int] | None = None,
    listed_twice: bool = True,
    ipv6_ports: Mapping[int, int] | None = None,
    addresses: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A task of `svc` on `node_id`; `ports` maps target port → published host port, `addresses` each
    overlay network's ID → the task's address on it."""
    name = svc["Spec"]["Name"]
    bindings = []
    for target, published in sorted((ports or {}).items()):
        binding = {"Protocol": "tcp", "TargetPort": target, "PublishedPort": published, "PublishMode": "host"}
        # Docker 20.10 lists the IPv4 binding, then the IPv6 one; their ports differ when the IPv4
        # port was taken on the node (`ipv6_ports` gives the IPv6 one then).
        twin = dict(binding, PublishedPort=(ipv6_ports or {}).get(target, published))
        bindings.extend([binding, twin] if listed_twice else [binding])
    status: dict[str, Any] = {
        "Timestamp": CREATED,
        "State": state,
        "Message": state,
        "ContainerStatus": {"ContainerID": _id("container", f"{name}.{slot}.{node_id}") * 2, "PID": 42,
                            "ExitCode": 0},
        "PortStatus": {"Ports": bindings} if bindings else {},
    }
    out: dict[str, Any] = {
        "ID": id or _id("task", f"{name}.{slot}.{node_id}.{state}.{desired}"),
        "Version": {"Index": 20},
        "CreatedAt": CREATED,
        "UpdatedAt": CREATED,
        "Labels": {},
        "Spec": svc["Spec"]["TaskTemplate"],
        "ServiceID": svc["ID"],
        "Slot": slot,
        "NodeID": node_id,
        "Status": status,
        "DesiredState": desired,
    }
    if addresses:
        out["NetworksAttachments"] = [
            {"Network": {"ID": network_id, "Spec": {"Name": f"net-{network_id[:6]}", "Scope": "swarm",
                                                    "DriverConfiguration": {"Name": "overlay"}}},
             "Addresses": [f"{address}/24"]}
            for network_id, address in addresses.items()
        ]
    return out


def node(
    hostname: str,
    addr: str,
    *,
    id: str | None = None,
    role: str = "worker",
    state: str = "ready",
    availability: str = "active",
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ID": id or hostname,
        "Version": {"Index": 9},
        "CreatedAt": CREATED,
        "UpdatedAt": CREATED,
        "Spec": {"Labels": dict(labels or {}), "Role": role, "Availability": availability},
        "Description": {
            "Hostname": hostname,
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Engine": {"EngineVersion": "20.10.24+dfsg1"},
        },
        "Status": {"State": state, "Addr": addr},
    }
    if role == "manager":
        out["ManagerStatus"] = {"Leader": True, "Reachability": "reachable", "Addr": f"{addr}:2377"}
    return out


def swarm_config(name: str, data: bytes, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "ID": _id("config", name),
        "Version": {"Index": 11},
        "CreatedAt": CREATED,
        "UpdatedAt": CREATED,
        "Spec": {"Name": name, "Labels": dict(labels or {}), "Data": base64.b64encode(data).decode()},
    }


def swarm_secret(name: str, *, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "ID": _id("secret", name),
        "Version": {"Index": 12},
        "CreatedAt": CREATED,
        "UpdatedAt": CREATED,
        "Spec": {"Name": name, "Labels": dict(labels or {})},
    }


def overlay_network(
    name: str, *, driver: str = "overlay", scope: str = "swarm", ingress: bool = False
) -> dict[str, Any]:
    """A network as `GET /networks` lists it."""
    return {"Name": name, "Id": _id("network", name), "Driver": driver, "Scope": scope, "Ingress": ingress,
            "Attachable": False, "Labels": {}}

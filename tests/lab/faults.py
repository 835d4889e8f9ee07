"""The operator fault scenarios on the lab's seed deployment (does I/O through tests/lab/seed_deployment.py).

One module for both users: `bench/faults.py` (`make faults`, long windows, writes bench/faults.md)
and `tests/lab/test_faults.py` (short windows, asserts each scenario's bar). Each scenario starts
from a converged seed deployment at rest (`scripts/demo.sh up`, redeployed only when the previous
scenario left it broken), with steady load (`tests.lab.load.Load`, 25 requests/s to every LB node):

    settle under load -> apply the fault -> wait for recovery -> create a NEW routed service and
    time it until it answers on every LB node -> observe -> stop the load -> compare proxy tasks
    and the proxy service's spec version with before -> undo the fault

A proof that something did NOT happen (no write to the Swarm) comes from Docker's event stream
over a window, never from a sleep; the sleeps here only hold a fault or the load for a while.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import docker.errors
import requests.exceptions

from tests import docker_api
from tests.lab.bad_configs import model_rejected_config, nginx_rejected_config
from tests.lab.cluster import Lab
from tests.lab.load import Load
from tests.lab.seed_deployment import CONFIG, DEMO_HOST, OPERATOR, PROXY, SEED_TOML, Seed, swarm_time
from tests.support import wait_for


@dataclass(frozen=True)
class Windows:
    """How long each phase lasts: long in the bench, short in the tests."""

    settle: float  # load before the fault
    observe: float  # load after the new route answers (late proxy rolls show up here)
    hold: float  # how long a lasting fault (bad config, rival operator, operator away) stays
    rival: float  # how long a second operator (or replica) runs beside the first, writes counted
    rival_grace: float  # a second operator's start-up, before its writes count
    route_timeout: float  # give up on the new route after this (manager loss: twice)
    recovery_timeout: float  # new operator task, node down, replacement proxy
    quiet: float  # event window that proves a baseline is at rest
    patience: float  # how long a broken baseline may take to converge before it is redeployed


# A second operator runs two minutes in the full bench.
BENCH = Windows(settle=5, observe=15, hold=60, rival=120, rival_grace=10, route_timeout=90, recovery_timeout=150,
                quiet=5, patience=30)
TEST = Windows(settle=2, observe=3, hold=10, rival=12, rival_grace=3, route_timeout=15, recovery_timeout=120,
               quiet=2, patience=10)


@dataclass
class Result:
    scenario: str
    title: str
    failed: int = 0
    total: int = 0
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    longest_gap_s: float = 0.0
    proxy_tasks_before: list[str] = field(default_factory=list)
    proxy_tasks_after: list[str] = field(default_factory=list)
    proxy_replaced: int = 0
    proxy_version_before: int = 0
    proxy_version_after: int = 0
    operator_started: float | None = None  # Unix time the new operator task ran, where there is one
    route_s: float | None = None  # new service created -> 200 on every LB node
    route_timeout_s: float = 0.0  # how long the new route was given (None above: not served by then)
    route_from_operator_s: float | None = None  # new operator task running -> 200 on every LB node
    writes: int | None = None  # Swarm writes to owned objects in the rival's window (rival scenarios)
    writes_window_s: float | None = None
    judged_nodes: list[str] = field(default_factory=list)  # nodes that must see 0 failed requests
    allowed_replaced: int = 0  # proxy tasks the fault itself replaces (a killed one)
    forbidden_status: list[int] = field(default_factory=list)  # statuses that must never appear
    # Requests for a route made during a fault that did not get 200 after it was first served on every
    # LB node (two operators pushing different configs make such a route come and go).
    route_failures: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def failed_on(self, nodes: list[str]) -> int:
        return sum(int(self.per_node.get(n, {}).get("failed", 0)) for n in nodes)

    def status_seen(self, status: int) -> int:
        key = f"HTTP {status}"
        return sum(int(v.get("reasons", {}).get(key, 0)) for v in self.per_node.values())


def problems(r: Result) -> list[str]:
    """Where the result misses the fault table's bar (no failed request, no proxy replaced, the spec
    unchanged); empty means the scenario passes."""
    out = []
    if r.error:
        out.append(f"aborted: {r.error}")
    failed = r.failed_on(r.judged_nodes)
    if failed:
        reasons = {n: r.per_node[n]["reasons"] for n in r.judged_nodes if r.per_node.get(n, {}).get("failed")}
        out.append(f"{failed} failed requests on {', '.join(r.judged_nodes)}: {reasons}")
    if r.proxy_replaced > r.allowed_replaced:
        out.append(f"{r.proxy_replaced} proxy tasks replaced (allowed {r.allowed_replaced})")
    if r.proxy_version_after != r.proxy_version_before:
        out.append(f"proxy spec version {r.proxy_version_before} -> {r.proxy_version_after}")
    for status in r.forbidden_status:
        if r.status_seen(status):
            out.append(f"{r.status_seen(status)} answers with status {status}")
    if r.route_s is None and not r.error:
        # Not one of the table's time bounds (10 s, 30 s after a manager loss; those are in the table):
        # a route that does not arrive within these much longer waits means routing froze.
        out.append(f"the new route was not served on every LB node within {r.route_timeout_s:g} s")
    if r.route_failures:
        out.append(f"{r.route_failures} requests for the route made during the fault failed after it was served")
    if r.writes:
        out.append(f"{r.writes} Swarm writes to owned objects in {r.writes_window_s} s after convergence")
    return out


# ---------------------------------------------------------------- the scenarios
#
# Each function applies its fault and waits for recovery; it returns an undo step that runs after
# the load stopped (or None). It may set `result.operator_started`, expectations and notes.

Undo = Callable[[], None] | None
Scenario = Callable[[Seed, Result, Windows], Undo]


def _operator_moved(seed: Seed, result: Result, windows: Windows, apply: Callable[[], object]) -> None:
    old = {t["ID"] for t in seed.operator_tasks()}
    t0 = time.monotonic()
    apply()
    task = seed.wait_new_operator(old, windows.recovery_timeout)
    result.operator_started = swarm_time(task["Status"]["Timestamp"])
    where = seed.node_names().get(task["NodeID"], task["NodeID"])
    result.notes.append(f"new operator task on {where} running after {time.monotonic() - t0:.1f} s")


def operator_restart(seed: Seed, result: Result, windows: Windows) -> Undo:
    _operator_moved(seed, result, windows,
                    lambda: seed.cli("service", "update", "--detach", "--force", "--no-resolve-image", OPERATOR))
    return None


def operator_sigkill(seed: Seed, result: Result, windows: Windows) -> Undo:
    task = seed.operator_tasks()[0]
    node = seed.node_names()[task["NodeID"]]
    cid = task["Status"]["ContainerStatus"]["ContainerID"]
    _operator_moved(seed, result, windows, lambda: seed.cli("kill", "-s", "KILL", cid, node=node))
    return None


def operator_image_update(seed: Seed, result: Result, windows: Windows) -> Undo:
    tag = f"swarmgate/operator:{seed.name('tag')}"
    for node in seed.lab.names:
        if node not in seed.stopped:
            seed.cli("tag", "swarmgate/operator:lab", tag, node=node)
    _operator_moved(seed, result, windows, lambda: seed.cli(
        "service", "update", "--detach", "--no-resolve-image", "--image", tag, OPERATOR))
    return None


def manager_loss(seed: Seed, result: Result, windows: Windows) -> Undo:
    task = seed.operator_tasks()[0]
    node = seed.node_names()[task["NodeID"]]
    old = {task["ID"]}
    t0 = time.monotonic()
    seed.stop_node(node)
    down = wait_for(lambda: seed.client().api.inspect_node(task["NodeID"])["Status"]["State"] == "down",
                    timeout=windows.recovery_timeout, what=f"{node} listed down")
    del down
    result.notes.append(f"stopped {node} (operator's manager); Swarm listed it down after "
                        f"{time.monotonic() - t0:.1f} s")
    new = seed.wait_new_operator(old, windows.recovery_timeout)
    result.operator_started = swarm_time(new["Status"]["Timestamp"])
    where = seed.node_names().get(new["NodeID"], new["NodeID"])
    result.notes.append(f"new operator task on {where} running {time.monotonic() - t0:.1f} s after the power cut")
    return lambda: seed.start_node(node)


def manager_freeze(seed: Seed, result: Result, windows: Windows) -> Undo:
    """A frozen manager: `kill -STOP` of the dockerd on the manager that runs the operator. Swarm starts
    a new operator task elsewhere, which takes the lease; the old one keeps running in its container
    (containerd is not frozen) with a Docker API that never answers. It must stop pushing on its own
    (its lease is unconfirmed), and the agents refuse its older term anyway: a route created while
    both run must reach every LB node and stay there."""
    task = seed.operator_tasks()[0]
    node = seed.node_names()[task["NodeID"]]
    t0 = time.monotonic()
    seed.freeze_engine(node)
    new = seed.wait_new_operator({task["ID"]}, windows.recovery_timeout)
    result.operator_started = swarm_time(new["Status"]["Timestamp"])
    result.notes.append(f"froze dockerd on {node} (operator's manager); new operator task running "
                        f"{time.monotonic() - t0:.1f} s later")
    name, _, served, missing = seed.new_route(windows.route_timeout * 2)
    if served is None:
        result.notes.append(f"{name}.local not served on {', '.join(sorted(missing))} while frozen")
        return lambda: seed.thaw_engine(node)
    # The first 200s may come from new workers while an old one of the same reload still accepts:
    # the watch starts once each agent says only the new workers serve.
    wait_for(lambda: all(seed.agent_serves_host(lb, f"{name}.local") for lb in seed.lab.lb_nodes),
             timeout=30, what=f"every agent serving {name}.local")
    # Both operators run now: watch the route for as long as the fault holds.
    deadline = time.monotonic() + windows.hold
    probes = 0
    reasons: dict[str, int] = {}
    while time.monotonic() < deadline:
        for lb in seed.lab.lb_nodes:
            probes += 1
            why = seed.why_not(lb, f"{name}.local", metadata=name)
            if why:
                result.route_failures += 1
                key = f"{lb} {why}"
                reasons[key] = reasons.get(key, 0) + 1
        time.sleep(0.2)
    result.notes.append(f"{name}.local: {result.route_failures} of {probes} probes failed in {windows.hold:g} s "
                        f"with both operators running {reasons or ''}".rstrip())
    return lambda: seed.thaw_engine(node)


def _count_writes(seed: Seed, result: Result, windows: Windows, hold: float) -> None:
    start = time.time() + windows.rival_grace
    time.sleep(windows.rival_grace)  # the newcomer's start-up; its writes from here on count
    writes = seed.owned_writes(start, start + hold)
    result.writes = len(writes)
    result.writes_window_s = round(hold, 1)
    if writes:
        kinds: dict[str, int] = {}
        for w in writes:
            kinds[w] = kinds.get(w, 0) + 1
        result.notes.append("writes: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))


def second_operator(seed: Seed, result: Result, windows: Windows) -> Undo:
    rival = seed.name("rival")
    seed.cli("service", "create", "--detach", "--no-resolve-image", "--quiet", "--name", rival,
             "--mount", "src=/var/run/docker.sock,dst=/var/run/docker.sock,type=bind",
             "--constraint", "node.role==manager", "--publish", "mode=host,target=8080",
             "--config", f"src={CONFIG},target=/config.toml",
             "swarmgate/operator:lab", "-D", "run", "-c", "/config.toml")
    wait_for(lambda: seed.running_tasks(rival), timeout=windows.recovery_timeout, what=f"{rival} running")
    _count_writes(seed, result, windows, windows.rival)
    docker_api.remove_service(seed.client(), rival)
    wait_for(lambda: not any(seed.cli("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={rival}",
                                      node=m) for m in seed.lab.managers if m not in seed.stopped),
             timeout=60, what=f"{rival}'s container gone")
    result.notes.append(f"second operator {rival} ran beside {OPERATOR}, then removed")
    return None


def extra_replicas(seed: Seed, result: Result, windows: Windows) -> Undo:
    seed.cli("service", "update", "--detach", "--no-resolve-image", "--replicas", "2", OPERATOR)
    wait_for(lambda: len(seed.operator_tasks()) == 2, timeout=windows.recovery_timeout, what="2 operator tasks")
    _count_writes(seed, result, windows, windows.rival)
    seed.cli("service", "update", "--detach", "--no-resolve-image", "--replicas", "1", OPERATOR)
    wait_for(lambda: len(seed.operator_tasks()) == 1, timeout=60, what="1 operator task")
    result.notes.append(f"{OPERATOR} scaled to 2 replicas, then back to 1")
    return None


def bad_nginx_config(seed: Seed, result: Result, windows: Windows) -> Undo:
    """The issue's `MaxConnections = 99999999999999999999`: refused at start-up (exit 2)."""
    return _swap_in_config(seed, result, windows, model_rejected_config(SEED_TOML.read_text()))


def nginx_rejected_at_run_time(seed: Seed, result: Result, windows: Windows) -> Undo:
    """A config the model accepts and nginx -t refuses: the operator runs and holds every update."""
    return _swap_in_config(seed, result, windows, nginx_rejected_config(SEED_TOML.read_text()))


def _swap_in_config(seed: Seed, result: Result, windows: Windows, text: str) -> Undo:
    bad = seed.name("conf")
    seed.cli("config", "create", bad, "-", stdin=text)

    def swap(old: str, new: str) -> None:
        seed.cli("service", "update", "--detach", "--no-resolve-image", "--config-rm", old,
                 "--config-add", f"source={new},target=/config.toml", OPERATOR)

    old = {t["ID"] for t in seed.operator_tasks()}
    swap(CONFIG, bad)
    try:
        task = seed.wait_new_operator(old, 30)
        result.notes.append(f"operator running with the bad config on {seed.node_names().get(task['NodeID'])}")
    except TimeoutError:
        result.notes.append("no operator task runs with the bad config (refused at start-up)")
    # Hold the bad config under load; the proxy's spec version says whether it was touched.
    _, version = seed.proxy_state()
    time.sleep(windows.hold)
    _, version_now = seed.proxy_state()
    if version_now != version:
        result.notes.append(f"proxy spec written while the bad config was in place ({version} -> {version_now})")
    old = {t["ID"] for t in seed.operator_tasks()}
    swap(bad, CONFIG)
    task = seed.wait_new_operator(old, windows.recovery_timeout)
    result.operator_started = swarm_time(task["Status"]["Timestamp"])
    result.notes.append(f"good config swapped back after {windows.hold:.0f} s")
    return None


def missing_secret(seed: Seed, result: Result, windows: Windows) -> Undo:
    tls = seed.name("tls")
    seed.create_route(tls, {"com.docker.lb.hosts": f"{tls}.local", "com.docker.lb.port": "8080",
                            "com.docker.lb.ssl_cert": "no-such-secret", "com.docker.lb.ssl_key": "no-such-secret"})
    wait_for(lambda: seed.running_tasks(tls), timeout=windows.recovery_timeout, what=f"{tls} running")
    # A rolling update of demo: start-first, so a routing layer that follows it loses nothing.
    before = {t["ID"] for t in seed.running_tasks("demo")}
    seed.cli("service", "update", "--detach", "--no-resolve-image", "--force", "--update-order", "start-first",
             "demo")
    wait_for(lambda: (lambda now: now and not (now & before))({t["ID"] for t in seed.running_tasks("demo")}),
             timeout=windows.recovery_timeout, what="demo rolled")
    time.sleep(windows.hold / 2)  # the rolled demo under load
    result.notes.append(f"{tls} (ssl_cert/ssl_key=no-such-secret) created, then demo rolled (start-first)")
    return lambda: docker_api.remove_service(seed.client(), tls)


def _kill_proxy_on(seed: Seed, result: Result, windows: Windows, node: str) -> None:
    tasks, _ = seed.proxy_state()
    old = {t for t, n in tasks.items() if n == node}
    cid = seed.container_on(node, PROXY)
    t0 = time.monotonic()
    seed.cli("kill", "-s", "KILL", cid, node=node)
    wait_for(lambda: any(n == node and t not in old for t, n in seed.proxy_state()[0].items()),
             timeout=windows.recovery_timeout, what=f"replacement proxy task on {node}")
    result.notes.append(f"killed the proxy container on {node}; replacement running after "
                        f"{time.monotonic() - t0:.1f} s")


def _serves_again(seed: Seed, result: Result, windows: Windows, node: str) -> None:
    t0 = time.monotonic()
    try:
        wait_for(lambda: seed.answers(node, DEMO_HOST), timeout=windows.recovery_timeout, what="200")
        result.notes.append(f"{node} answered demo.local again {time.monotonic() - t0:.1f} s later")
    except TimeoutError:
        result.notes.append(f"{node} did not answer demo.local within {windows.recovery_timeout:.0f} s")


def proxy_kill(seed: Seed, result: Result, windows: Windows) -> Undo:
    node, other = seed.lab.lb_nodes[0], seed.lab.lb_nodes[1]
    result.judged_nodes, result.allowed_replaced = [other], 1
    _kill_proxy_on(seed, result, windows, node)
    _serves_again(seed, result, windows, node)
    return None


def lb_engine_restart(seed: Seed, result: Result, windows: Windows) -> Undo:
    node, other = seed.lab.lb_nodes[1], seed.lab.lb_nodes[0]
    # The seed's demo has one task, placed by Swarm on any node: on the LB node whose engine restarts it
    # dies with it, and no proxy has a task to send to (every request then fails, on any node: the
    # likely cause of 60 timeouts on lb-00 in one CI run). The row is about the other LB node's proxy,
    # so restart the one without the task.
    demo_nodes = {seed.node_names().get(t["NodeID"]) for t in docker_api.running_tasks(seed.client(), "demo")}
    if node in demo_nodes:
        node, other = other, node
    result.judged_nodes, result.allowed_replaced = [other], 1
    t0 = time.monotonic()
    seed.lab_py("restart-engine", node)
    result.notes.append(f"restarted {node}'s engine ({time.monotonic() - t0:.1f} s)")
    _serves_again(seed, result, windows, node)
    return None


def proxy_replaced_operator_away(seed: Seed, result: Result, windows: Windows) -> Undo:
    node, other = seed.lab.lb_nodes[0], seed.lab.lb_nodes[1]
    result.judged_nodes, result.allowed_replaced = [other], 1
    result.forbidden_status = [503]
    seed.cli("service", "update", "--detach", "--no-resolve-image", "--replicas", "0", OPERATOR)
    wait_for(lambda: not docker_api.tasks(seed.client(), filters={"service": OPERATOR, "desired-state": "running"})
             and not any(seed.cli("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={OPERATOR}",
                                  node=m) for m in seed.lab.managers if m not in seed.stopped),
             timeout=60, what="operator gone")
    _kill_proxy_on(seed, result, windows, node)
    t_end = time.time() + windows.hold
    served = False
    while time.time() < t_end:
        served = served or seed.answers(node, DEMO_HOST)
        time.sleep(0.5)
    result.notes.append(f"operator away {windows.hold:.0f} s after the replacement started; "
                        f"replacement {'served' if served else 'never served'} demo.local meanwhile")
    _operator_moved(seed, result, windows, lambda: seed.cli(
        "service", "update", "--detach", "--no-resolve-image", "--replicas", "1", OPERATOR))
    return None


PAIR = "fault-pair"  # the worker-power-cut row's service (`restore` removes every fault-* object)


def worker_power_cut(seed: Seed, result: Result, windows: Windows) -> Undo:
    """A host-mode service with two tasks on two plain workers, under its own load (2 s timeout) through
    both LB nodes; one of those workers loses power until Swarm has started its task elsewhere, then
    comes back. Each request the proxy sends to the dead task waits on a connect that ARP never lets
    complete: the pool's fast failover (1.5 s) must hand it to the other task within the client's 2 s.
    The demo task's node is spared, so the seed's load judges the same thing as in every other row."""
    host = f"{PAIR}.local"
    docker_api.create_service(
        seed.client(), name=PAIR,
        task_template={"ContainerSpec": {"Image": "swarmgate/demo:lab", "Env": [f"METADATA={PAIR}"]},
                       "Placement": {"Constraints": ["node.role==worker", "node.labels.nodetype!=loadbalancer"],
                                     "MaxReplicas": 1}},
        labels={"com.docker.lb.hosts": host, "com.docker.lb.port": "8080"}, mode={"Replicated": {"Replicas": 2}},
        endpoint_spec={"Ports": [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]})
    names = seed.node_names()

    def nodes_of_pair() -> set[str]:
        return {names.get(t["NodeID"], t["NodeID"]) for t in seed.running_tasks(PAIR)}

    on = wait_for(lambda: nodes_of_pair() if len(nodes_of_pair()) == 2 else None,
                  timeout=windows.recovery_timeout, what=f"two running tasks of {PAIR}")
    # Both tasks in every proxy's config: the host's pool names each task's ID.
    ids = [t["ID"] for t in seed.running_tasks(PAIR)]
    wait_for(lambda: all(seed.agent_serves_host(n, host, *ids) for n in seed.lab.lb_nodes),
             timeout=windows.route_timeout, what=f"both tasks of {PAIR} served on every LB node")
    demo_nodes = {names.get(t["NodeID"], "") for t in seed.running_tasks("demo")}
    victim = min((n for n in on if n not in demo_nodes), default=None)
    if victim is None:
        raise RuntimeError(f"both tasks of {PAIR} run beside demo's ({sorted(on)}): no worker to cut")
    load = Load({n: seed.lab.address(n) for n in seed.lab.lb_nodes}, hosts=(host,), timeout=2.0)
    with load:
        time.sleep(windows.settle)
        t0 = time.monotonic()
        seed.stop_node(victim)
        wait_for(lambda: len(nodes_of_pair() - {victim}) == 2 or None,
                 timeout=windows.recovery_timeout, what=f"{PAIR}'s task started again off {victim}")
        result.notes.append(f"{PAIR}: power cut on {victim}; Swarm ran its task elsewhere after "
                            f"{time.monotonic() - t0:.1f} s")
        seed.start_node(victim)
        time.sleep(windows.observe)
    for node, s in load.summary().items():
        key = f"{node} {PAIR}"
        result.per_node[key] = {"failed": s.failed, "total": s.total, "longest_gap_s": s.longest_gap_s,
                                "reasons": s.reasons}
        result.judged_nodes.append(key)
    failed, total = load.failed_total()
    result.notes.append(f"{PAIR}.local: {failed} / {total} failed (2 s timeout)")

    def remove_pair() -> None:
        seed.cli("service", "rm", PAIR)
    return remove_pair


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    run: Scenario
    route_timeout_factor: float = 1.0


SCENARIOS: tuple[Spec, ...] = (
    Spec("operator-restart", "operator restart (`service update --force interlock`)", operator_restart),
    Spec("operator-sigkill", "operator SIGKILL (container killed on its node)", operator_sigkill),
    Spec("operator-image-update", "operator image update (re-tagged image)", operator_image_update),
    Spec("manager-loss", "loss of the manager running the operator (stop-node)", manager_loss, 2.0),
    Spec("manager-freeze", "the operator's manager frozen (`kill -STOP` of its dockerd)", manager_freeze, 2.0),
    Spec("second-operator", "second operator service with the same config", second_operator),
    Spec("extra-replicas", "extra operator replicas (2)", extra_replicas),
    Spec("bad-nginx-config", "config nginx rejects (`MaxConnections = 99999999999999999999`)", bad_nginx_config),
    Spec("nginx-rejects-at-run-time",
         "config the model accepts, nginx rejects (`HTTPOptions = [\"gzip_comp_level 99\"]`)",
         nginx_rejected_at_run_time),
    Spec("missing-secret", "service with `ssl_cert=no-such-secret`, then a rolling update of demo",
         missing_secret),
    Spec("proxy-kill", "proxy task killed (lb-00; judged on lb-01)", proxy_kill),
    Spec("lb-engine-restart", "LB node's engine restart (one without the demo task; judged on the other)",
         lb_engine_restart),
    Spec("proxy-replaced-operator-away", "proxy task replaced while the operator is away",
         proxy_replaced_operator_away),
    Spec("worker-power-cut", "power cut of a worker running one of two host-mode tasks (stop-node)",
         worker_power_cut),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def _new_route(seed: Seed, result: Result, timeout: float) -> None:
    result.route_timeout_s = timeout
    name, created, served, missing = seed.new_route(timeout)
    if served is None:
        result.notes.append(f"new route {name}.local not served on {', '.join(sorted(missing))} within {timeout:.0f} s")
        return
    result.route_s = round(served - created, 2)
    if result.operator_started is not None:
        result.route_from_operator_s = round(served - result.operator_started, 2)


def run_scenario(seed: Seed, spec: Spec, windows: Windows) -> Result:
    """One scenario from a converged baseline, under load on every LB node; never raises for a
    fault that misbehaves (that is the result), only for a lab that cannot be brought to baseline."""
    result = Result(spec.name, spec.title, judged_nodes=list(seed.lab.lb_nodes))
    t0 = time.monotonic()
    seed.log(f"--- {spec.name}: baseline")
    seed.ensure_baseline(quiet=windows.quiet, patience=windows.patience)
    tasks_before, result.proxy_version_before = seed.proxy_state()
    result.proxy_tasks_before = sorted(tasks_before)
    undo: Undo = None
    load = Load({n: seed.lab.address(n) for n in seed.lab.lb_nodes}, hosts=(DEMO_HOST,))
    try:
        with load:
            time.sleep(windows.settle)  # steady load before the fault: the baseline of the window
            seed.log(f"--- {spec.name}: fault")
            try:
                undo = spec.run(seed, result, windows)
                _new_route(seed, result, windows.route_timeout * spec.route_timeout_factor)
            except (TimeoutError, RuntimeError, docker.errors.APIError) as exc:
                result.error = f"{type(exc).__name__}: {exc}"
            time.sleep(windows.observe)
        for node, s in load.summary().items():
            result.per_node[node] = {"failed": s.failed, "total": s.total, "longest_gap_s": s.longest_gap_s,
                                     "reasons": s.reasons}
        result.failed, result.total = load.failed_total()
        result.longest_gap_s = max((s["longest_gap_s"] for s in result.per_node.values()), default=0.0)
        with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
            tasks_after, result.proxy_version_after = seed.proxy_state()
            result.proxy_tasks_after = sorted(tasks_after)
        result.proxy_replaced = len(set(result.proxy_tasks_before) - set(result.proxy_tasks_after))
    finally:
        if undo is not None:
            try:
                undo()
            except (TimeoutError, RuntimeError, docker.errors.APIError) as exc:
                result.notes.append(f"undo failed: {exc}")
        for svc in seed.client().services.list():
            if svc.name.startswith("fault-route-"):
                docker_api.remove(svc)
        result.seconds = round(time.monotonic() - t0, 1)
        # Routing that froze (or a scenario that aborted) must not pass as the next one's baseline,
        # even where demo.local still answers: the next scenario starts from a fresh deployment.
        seed.tainted = seed.tainted or result.error is not None or result.route_s is None
    seed.log(f"--- {spec.name}: {result.failed}/{result.total} failed, gap {result.longest_gap_s} s, "
             f"replaced {result.proxy_replaced}, version {result.proxy_version_before}->"
             f"{result.proxy_version_after}, route {result.route_s} s; {'; '.join(result.notes)}"
             + (f"; ERROR {result.error}" if result.error else ""))
    return result


@contextlib.contextmanager
def seed_deployment(lab: Lab | None = None) -> Iterator[Seed]:
    """The seed deployed on the lab for a series of scenarios; the lab is restored afterwards, even on
    failure (stopped nodes started, the deployment and every fault-* object removed)."""
    seed = Seed(lab)
    try:
        yield seed
    finally:
        seed.restore()

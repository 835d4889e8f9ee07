"""Backend changes under steady load on the seed deployment (does I/O through
tests/lab/seed_deployment.py and the lab's engines).

One module for both users: `bench/rolls.py` (`make rolls`, writes bench/rolls.md) and
`tests/lab/test_rolls.py` (asserts 0 failed requests). A routed backend of 3 tasks (host mode, like
the seed's `demo`: `--publish mode=host,target=8080`, pinned to the plain workers so a drain has a
task to move) is changed while `Load` sends 25 requests/s through every LB node:

    rolling update --force, stop-first | rolling update --force, start-first | scale 3 -> 1 -> 3 |
    drain a worker holding a task (then active again)

The bench also runs them with the backend on an overlay network (task mode, Interlock's default),
and rolls a single task both ways (stop-first: no task is left to retry on for a moment).

Each change is followed until Swarm has finished it AND every proxy's served config lists exactly the
backend's running tasks (read from the config itself, task IDs are in its comments); only then does
the load stop. No fixed sleep but the short load windows before and after the change.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import docker.errors

from tests import docker_api
from tests.lab import faults
from tests.lab.cluster import Lab
from tests.lab.load import Load
from tests.lab.seed_deployment import PROXY, Seed, swarm_time
from tests.support import wait_for

UPDATING = ("updating", "rollback_started")
TASK_LINE = re.compile(r"server (\S+);\s+# (\S+) task (\S+)")
# With LuaBalancer, a pool's tasks are one line of the peers map: `POOL "PEERS";  # SVC task ID, ...`.
PEERS_LINE = re.compile(r'^\s+\S+ "[^"]*";\s+# (.+)$', re.M)
# Where the proxy agent (swarmgate/operator/planning/agent.sh) keeps the live config and its status.
# The status is `status` under the channel key's generation 0, `status-gN` after a rotation to N.
CONFIG_PATH, STATUS_PATH = "/etc/nginx/nginx.conf", "/var/lib/swarmgate/status*"
SEPARATOR = "--- swarmgate rolls ---"
PLAIN_WORKERS = ("node.role==worker", "node.labels.nodetype!=loadbalancer")


@dataclass(frozen=True)
class Windows:
    before: float  # load before the change
    after: float  # load after the change is complete and routed
    change_timeout: float  # Swarm finishes the change and every proxy serves it


BENCH = Windows(before=3, after=3, change_timeout=120)
TEST = Windows(before=1, after=1, change_timeout=60)


@dataclass
class Result:
    scenario: str
    title: str
    replicas: int
    failed: int = 0
    total: int = 0
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)
    longest_gap_s: float = 0.0
    change_s: float | None = None  # change issued -> Swarm done and every proxy serves the new tasks
    expect_failures: bool = False  # a single task stopped first: nothing is left for nginx to retry
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def problems(r: Result) -> list[str]:
    """Where the result misses the rolls' bar (no failed request); a scenario that expects failures is only measured."""
    out = []
    if r.error:
        out.append(f"aborted: {r.error}")
    if r.failed and not r.expect_failures:
        reasons = {n: v["reasons"] for n, v in r.per_node.items() if v["failed"]}
        out.append(f"{r.failed} of {r.total} requests failed: {reasons}")
    if not r.total:
        out.append("no request was sent")
    return out


def proxy_at_rest(seed: Seed) -> bool:
    state = (docker_api.inspect_service(seed.client(), PROXY).get("UpdateStatus") or {}).get("State")
    return state not in UPDATING


class Backend:
    """One routed demo service of the harness, named `fault-roll-*` so `Seed.restore` removes it."""

    def __init__(self, seed: Seed, kind: str, replicas: int, network: str | None = None) -> None:
        self.seed = seed
        self.name = seed.name(kind)
        self.host = f"{self.name}.local"
        self.replicas = replicas
        self.network = network
        self._proxy_clients: dict[str, docker.DockerClient] = {}

    def create(self) -> None:
        """Host mode like the seed's demo, or on an overlay network as Interlock's documentation does it
        (task mode: each task's address on the network)."""
        where = ["--network", self.network] if self.network else ["--publish", "mode=host,target=8080"]
        self.seed.cli("service", "create", "--detach", "--no-resolve-image", "--quiet", "--name", self.name,
                      "--replicas", str(self.replicas),
                      "--label", f"com.docker.lb.hosts={self.host}", "--label", "com.docker.lb.port=8080",
                      *where, "--env", f"METADATA={self.name}",
                      *(a for c in PLAIN_WORKERS for a in ("--constraint", c)),
                      "swarmgate/demo:lab")

    def remove(self) -> None:
        with contextlib.suppress(docker.errors.APIError):
            docker_api.remove_service(self.seed.client(), self.name)
        for c in self._proxy_clients.values():
            c.close()
        self._proxy_clients.clear()

    # -- what Swarm says

    def tasks(self) -> dict[str, str]:
        """Running tasks (desired and actual) -> node name."""
        names = self.seed.node_names()
        return {t["ID"]: names.get(t["NodeID"], t["NodeID"]) for t in self.seed.running_tasks(self.name)}

    def update_state(self) -> str:
        spec = docker_api.inspect_service(self.seed.client(), self.name)
        return str((spec.get("UpdateStatus") or {}).get("State", ""))

    def settled(self) -> bool:
        """No task of the service is on its way in or out: every task is running and desired so, or
        gone (desired shutdown and actually stopped)."""
        for t in docker_api.tasks(self.seed.client(), filters={"service": self.name}):
            desired, state = t["DesiredState"], t["Status"]["State"]
            if desired == "running" and state != "running":
                return False
            if desired != "running" and state in ("running", "starting", "preparing", "assigned", "accepted"):
                return False
        return True

    # -- what every proxy serves

    def _proxy_client(self, node: str) -> docker.DockerClient:
        if node not in self._proxy_clients:
            self._proxy_clients[node] = self.seed.lab.client(node)
        return self._proxy_clients[node]

    def served(self, node: str) -> set[str]:
        """Task IDs of this backend in the config the proxy on `node` serves now. The file at the live
        path is written before `nginx -t` and the reload, so it alone runs ahead of what nginx serves
        (one CI run started its load there and got a 503): it counts only once the agent's status says
        it serves exactly that file's digest, which it writes after the new workers replaced the old."""
        client = self._proxy_client(node)
        containers = client.containers.list(
            ignore_removed=True, filters={"label": f"com.docker.swarm.service.name={PROXY}"})
        if len(containers) != 1:
            return set()
        both = f"cat {STATUS_PATH} && echo '{SEPARATOR}' && cat {CONFIG_PATH}"
        code, out = containers[0].exec_run(["sh", "-c", both])
        if code != 0 or not isinstance(out, bytes):
            return set()
        status, _, config = out.partition(f"\n{SEPARATOR}\n".encode())
        words = status.split(b"\n", 1)[0].split()
        # swarmgate/3 status TASK ok DIGEST TERM SEQ
        if len(words) != 7 or words[3] != b"ok" or words[4].decode() != hashlib.sha256(config).hexdigest():
            return set()
        text = config.decode(errors="replace")
        balanced = {task for m in PEERS_LINE.finditer(text) for svc, _, task in
                    (entry.partition(" task ") for entry in m.group(1).split(", ")) if svc == self.name}
        return balanced | {m.group(3) for m in TASK_LINE.finditer(text) if m.group(2) == self.name}

    def routed(self, replicas: int) -> bool:
        """`replicas` tasks run, Swarm is done with the service, and every LB node's proxy serves
        exactly those tasks."""
        tasks = set(self.tasks())
        if len(tasks) != replicas or self.update_state() in UPDATING:
            return False
        if self.network and not proxy_at_rest(self.seed):  # joining the network rolls the proxy
            return False
        if not self.settled():
            return False
        return all(self.served(node) == tasks for node in self.seed.lab.lb_nodes)

    def wait_routed(self, replicas: int, timeout: float) -> None:
        wait_for(lambda: self.routed(replicas), timeout=timeout,
                 what=f"{replicas} tasks of {self.name} running and served by every proxy")


# ---------------------------------------------------------------- the changes
#
# Each one issues its change, waits until it is complete and routed, and may add notes.

Change = Callable[[Backend, Result, Windows], None]


def _roll(order: str) -> Change:
    def change(b: Backend, result: Result, windows: Windows) -> None:
        before = set(b.tasks())
        issued = time.time()
        b.seed.cli("service", "update", "--detach", "--no-resolve-image", "--quiet", "--force",
                   "--update-order", order, b.name)
        wait_for(lambda: not (set(b.tasks()) & before) and b.routed(b.replicas), timeout=windows.change_timeout,
                 what=f"{b.name} rolled ({order}) and served")
        result.notes.append(f"{len(before)} task{'s' * (len(before) != 1)} replaced ({order})")
        # When Swarm stopped the old tasks and ran the new ones, on the update's clock (one machine).
        stopped, started = [], []
        for t in docker_api.tasks(b.seed.client(), filters={"service": b.name}):
            at = swarm_time(t["Status"]["Timestamp"]) - issued
            if t["ID"] in before:
                stopped.append(at)
            elif t["DesiredState"] == "running" and t["Status"]["State"] == "running":
                started.append(at)
        if stopped and started:
            result.notes.append(f"old tasks ended {_span(stopped)} s and new tasks ran {_span(started)} s "
                                "after the update was issued")
    return change


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f} to {hi:.2f}"


def _scale(b: Backend, result: Result, windows: Windows) -> None:
    b.seed.cli("service", "update", "--detach", "--no-resolve-image", "--quiet", "--replicas", "1", b.name)
    b.wait_routed(1, windows.change_timeout)
    t = time.monotonic()
    b.seed.cli("service", "update", "--detach", "--no-resolve-image", "--quiet", "--replicas", str(b.replicas),
               b.name)
    b.wait_routed(b.replicas, windows.change_timeout)
    result.notes.append(f"scaled to 1 then back to {b.replicas} ({time.monotonic() - t:.1f} s for the way up)")


def _drain(b: Backend, result: Result, windows: Windows) -> None:
    node = sorted(set(b.tasks().values()))[0]
    moved = {t for t, n in b.tasks().items() if n == node}
    b.seed.cli("node", "update", "--availability", "drain", node)
    try:
        wait_for(lambda: node not in b.tasks().values() and not (set(b.tasks()) & moved)
                 and b.routed(b.replicas), timeout=windows.change_timeout,
                 what=f"{b.name}'s tasks off {node} and served")
    finally:
        b.seed.cli("node", "update", "--availability", "active", node)
    where = sorted(b.tasks().values())
    result.notes.append(f"drained {node} ({len(moved)} task moved; tasks now on {', '.join(where)}), "
                        "then set it active again")


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    change: Change
    replicas: int = 3
    overlay: bool = False  # the backend on an overlay network (task mode) rather than in host mode
    expect_failures: bool = False

    @property
    def backend(self) -> tuple[int, bool]:
        """Scenarios with the same backend shape run one after another on one backend."""
        return self.replicas, self.overlay


def _three(overlay: bool) -> tuple[Spec, ...]:
    p, where = ("overlay-", "overlay network") if overlay else ("", "host mode")
    return (
        Spec(f"{p}roll-stop-first", f"3 tasks ({where}), `service update --force --update-order stop-first`",
             _roll("stop-first"), overlay=overlay),
        Spec(f"{p}roll-start-first", f"3 tasks ({where}), `service update --force --update-order start-first`",
             _roll("start-first"), overlay=overlay),
        Spec(f"{p}scale", f"3 tasks ({where}) scaled to 1, then back to 3", _scale, overlay=overlay),
        Spec(f"{p}drain", f"3 tasks ({where}), a worker holding one drained, then active again", _drain,
             overlay=overlay),
    )


HOST_MODE = _three(overlay=False)
OVERLAY = _three(overlay=True)
SINGLE = (
    Spec("single-start-first", "1 task (host mode), `service update --force --update-order start-first`",
         _roll("start-first"), replicas=1),
    Spec("single-stop-first", "1 task (host mode), `service update --force --update-order stop-first`",
         _roll("stop-first"), replicas=1, expect_failures=True),
)
SCENARIOS: tuple[Spec, ...] = (*HOST_MODE, *OVERLAY, *SINGLE)
BY_NAME = {s.name: s for s in SCENARIOS}


def run_change(b: Backend, spec: Spec, windows: Windows) -> Result:
    """One change of a routed backend (already at `spec.replicas` tasks, routed) under load on every
    LB node; never raises for a change that goes wrong (that is the result)."""
    result = Result(spec.name, spec.title, spec.replicas, expect_failures=spec.expect_failures)
    seed = b.seed
    t0 = time.monotonic()
    seed.log(f"--- {spec.name}: {spec.title}")
    load = Load({n: seed.lab.address(n) for n in seed.lab.lb_nodes}, hosts=(b.host,))
    with load:
        time.sleep(windows.before)
        t, issued = time.monotonic(), time.time()
        try:
            spec.change(b, result, windows)
            result.change_s = round(time.monotonic() - t, 2)
        except (AssertionError, TimeoutError, RuntimeError, docker.errors.APIError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        time.sleep(windows.after)
    for node, s in load.summary().items():
        result.per_node[node] = {"failed": s.failed, "total": s.total, "longest_gap_s": s.longest_gap_s,
                                 "reasons": s.reasons}
    result.failed, result.total = load.failed_total()
    if failures := load.failures():
        result.notes.append(f"requests failed from {min(r.sent for r in failures) - issued:.2f} s to "
                            f"{max(r.sent for r in failures) - issued:.2f} s after the change was issued")
    result.longest_gap_s = max((v["longest_gap_s"] for v in result.per_node.values()), default=0.0)
    result.seconds = round(time.monotonic() - t0, 1)
    seed.log(f"--- {spec.name}: {result.failed}/{result.total} failed, longest gap {result.longest_gap_s} s, "
             f"change {result.change_s} s; {'; '.join(result.notes)}"
             + (f"; reasons {[v['reasons'] for v in result.per_node.values()]}" if result.failed else "")
             + (f"; ERROR {result.error}" if result.error else ""))
    return result


@contextlib.contextmanager
def backend(seed: Seed, replicas: int, windows: Windows, *, overlay: bool = False) -> Iterator[Backend]:
    """A routed backend of `replicas` tasks, served by every proxy; removed afterwards (its network
    stays joined by the proxy, as swarmgate leaves networks: `deployment` removes it at the end)."""
    network = None
    if overlay:
        network = seed.name("rollnet")
        seed.cli("network", "create", "-d", "overlay", network)
    b = Backend(seed, "roll", replicas, network)
    b.create()
    try:
        b.wait_routed(replicas, windows.change_timeout)
        yield b
    finally:
        b.remove()


def run_all(seed: Seed, specs: tuple[Spec, ...], windows: Windows, *, quiet: float = 2,
            patience: float = 10) -> list[Result]:
    """The scenarios in order; consecutive ones of the same size share one backend."""
    seed.ensure_baseline(quiet=quiet, patience=patience)
    results: list[Result] = []
    i = 0
    while i < len(specs):
        group = [specs[i]]
        while i + len(group) < len(specs) and specs[i + len(group)].backend == group[0].backend:
            group.append(specs[i + len(group)])
        with backend(seed, group[0].replicas, windows, overlay=group[0].overlay) as b:
            results += [run_change(b, spec, windows) for spec in group]
        i += len(group)
    return results


@contextlib.contextmanager
def deployment(lab: Lab | None = None) -> Iterator[Seed]:
    """The seed deployed for a series of scenarios; afterwards the lab is restored (tests/lab/faults.py)
    and the overlay networks made here are removed once the proxy that joined them is gone."""
    with faults.seed_deployment(lab) as seed:
        yield seed
    client = seed.client()
    try:
        for net in client.networks.list(filters={"name": "fault-rollnet-"}):
            wait_for(_remover(net), timeout=60, what=f"network {net.name} removed")
    finally:
        seed.close()


def _remover(net: Any) -> Callable[[], bool]:
    def remove() -> bool:
        try:
            net.remove()
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError:
            return False  # still in use: the proxy's tasks are leaving it
        return True
    return remove

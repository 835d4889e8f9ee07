"""One deployment of the seed's scenario, handed from one lab test module to the next (does I/O
through `Seed`: the Docker API, scripts/demo.sh).

Eight modules test against the seed deployed the seed's way (test_seed_e2e.py by its own commands,
the others by `scripts/demo.sh up`); each deployed it afresh and removed it after, 10-17 s a deployment
on the lab. A module marked
`pytest.mark.shared_seed(keeps=True)` leaves it behind for the next one when it put everything back
(`keep`); one marked `keeps=False` still removes it itself (its objects are mounted by the proxy or
joined to it, and only go with it). `acquire` reuses a kept deployment once it is converged and at
rest (Docker's event stream over a quiet window, as between two fault rows), and deploys afresh
otherwise. tests/lab/conftest.py runs the marked modules one after the other (the one that deploys it
itself first, `fresh=True`, then the keepers), and
removes a kept deployment before any test that is not marked: every other test still starts from a
Swarm without it, and a module run alone behaves as before.
"""

from __future__ import annotations

import docker.errors
import pytest

from tests import docker_api
from tests.lab.cluster import load_lab
from tests.lab.operator_fixture import forget_proxy_volumes, operator_endpoints, successful_passes
from tests.lab.seed_deployment import CONFIG, OPERATOR, Seed
from tests.support import wait_for

MARK = "shared_seed"
OPERATOR_IMAGE = "swarmgate/operator:lab"  # scripts/demo.sh's
QUIET_S = 2.0  # the event window that proves a kept deployment is at rest (faults.TEST.quiet)
PATIENCE_S = 30.0  # how long a kept deployment may take to converge before it is deployed afresh

_kept = False  # a module left the deployment for the next one


def acquire(seed: Seed) -> None:
    """The seed deployed and converged: the kept deployment when it is at rest, else a fresh one."""
    global _kept
    if _kept:
        _kept = False
        seed.log("reusing the seed deployment the previous module kept")
        seed.ensure_baseline(quiet=QUIET_S, patience=PATIENCE_S)  # redeploys if it is not converged
        wait_for(lambda: operator_serving(seed), timeout=PATIENCE_S, what="the seed's operator serving /metrics")
        return
    seed.undeploy()  # whatever an interrupted run left
    # The previous module's proxies left their served config and certificates in volumes on the LB
    # nodes (`demo.sh down` keeps them); a fresh deployment starts from the bootstrap, as it did when
    # another module's clean-up always ran in between (in CI, lb-00 then answered 503s for hosts the
    # new operator routes, right after module to module hand-overs).
    forget_proxy_volumes(seed.lab)
    seed.deploy()


def pristine(seed: Seed) -> bool:
    """No stopped or frozen node, the operator is the seed's own spec (its image, its config, one
    replica) and the deployment is converged: what `demo.sh up` would have left."""
    if seed.stopped or seed.frozen or seed.tainted:
        return False
    try:
        spec = docker_api.inspect_service(seed.client(), OPERATOR)["Spec"]
    except docker.errors.APIError:  # gone (NotFound), or no manager answers
        return False
    container = spec["TaskTemplate"]["ContainerSpec"]
    configs = [c.get("ConfigName") for c in container.get("Configs") or []]
    if container.get("Image") != OPERATOR_IMAGE or configs != [CONFIG]:
        return False
    try:
        wait_for(seed.converged, timeout=PATIENCE_S, what="the seed deployment converged")
        wait_for(lambda: operator_serving(seed), timeout=PATIENCE_S, what="the seed's operator serving /metrics")
    except TimeoutError:
        return False
    return True


def operator_serving(seed: Seed) -> bool:
    """One operator task runs, and it answers on its published port with a pass done: a task Swarm
    lists as running may not listen yet (a module may have restarted it)."""
    found = operator_endpoints(seed.client(), (OPERATOR,))
    return len(found) == 1 and successful_passes(*next(iter(found.values()))) >= 1


def keep(seed: Seed, *, check_down: bool = False) -> bool:
    """Leave the deployment for the next module if it is pristine, else remove it (with `check_down`,
    `demo.sh down` must succeed then, as it must later for a kept one); whether it stays."""
    global _kept
    if pristine(seed):
        _kept = True
        seed.log("seed deployment kept for the next module")
    else:
        seed.log("seed deployment not as deployed: removing it")
        seed.undeploy(check=check_down)
    seed.close()
    return _kept


def release_unless_next_shares(nextitem: pytest.Item | None) -> None:
    """After a test: remove a kept deployment unless the next test is marked to use it. `demo.sh
    down` must succeed (it did in every module that removed its own deployment this way)."""
    global _kept
    if not _kept or (nextitem is not None and nextitem.get_closest_marker(MARK) is not None):
        return
    _kept = False
    seed = Seed(load_lab(), log=lambda msg: print(f"[shared seed] {msg}", flush=True))
    try:
        seed.undeploy(check=True)
    finally:
        seed.close()

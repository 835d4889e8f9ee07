"""One reconcile pass: observe, compute desired state, plan, apply (I/O through observe/actions).

A pass takes no event payload: it always re-reads the whole Swarm (level-triggered). It returns a
`PassReport`, or raises `TemporaryError` (the loop backs off and retries) or `TerminalError`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import platform
from dataclasses import dataclass, field
from importlib import resources

from swarmgate import __version__
from swarmgate.errors import TemporaryError
from swarmgate.models.settings.config import Config
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import TOKEN_DIGEST_LABEL, TOKEN_SECRET_NAME
from swarmgate.operator.edge.actions import Publisher, apply
from swarmgate.operator.edge.observe import Api, observe
from swarmgate.operator.planning.desired import DesiredState, build_desired, operator_endpoint
from swarmgate.operator.planning.plan import PublishProxyConfig, plan
from swarmgate.operator.planning.report import PassReport
from swarmgate.operator.telemetry.calls import CallCounter

log = logging.getLogger("swarmgate.reconcile")


def server_info() -> str:
    """The `x-server-info` value, in Interlock's shape: `swarmgate/0.1.0 linux/amd64`."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"swarmgate/{__version__} linux/{arch}"


@functools.cache
def agent_script() -> bytes:
    return resources.files("swarmgate.operator.delivery").joinpath("agent.sh").read_bytes()


def compute_desired(config: Config, observed: ObservedState, *, endpoint: str | None) -> DesiredState:
    return build_desired(config, observed, agent_script=agent_script(), endpoint=endpoint, server_info=server_info())




@dataclass
class Reconciler:
    config: Config
    api: Api
    publisher: Publisher
    own_container_id: str | None = None
    calls: CallCounter = field(default_factory=CallCounter)
    token_digest: str | None = None
    _published: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # What was last reported as not routed, so each problem is logged when it appears, not every pass.
    _reported: frozenset[tuple[str, str, str]] = frozenset()

    def reconcile_once(self) -> PassReport:
        reconcile_id = f"r{next(self._ids)}"
        observed = observe(self.api, self.calls)
        endpoint = operator_endpoint(self.config, observed, self.own_container_id)
        desired = compute_desired(self.config, observed, endpoint=endpoint)
        self._report_problems(desired, reconcile_id)
        actions = plan(desired, observed, published=self._published)
        result = apply(self.api, actions, observed=observed, publisher=self.publisher, calls=self.calls,
                       reconcile_id=reconcile_id)
        for action in result.done:
            if isinstance(action, PublishProxyConfig):
                self._published[action.extension] = action.digest
        self._refresh_token(observed)
        if result.error is not None:
            raise TemporaryError(f"{result.error} ({len(result.done)} done, {len(result.not_done)} not done)")
        digest = hashlib.sha256("".join(e.rendered.digest for e in desired.extensions).encode()).hexdigest()
        return PassReport(reconcile_id, actions, result, desired, observed, digest)

    def _report_problems(self, desired: DesiredState, reconcile_id: str) -> None:
        problems = frozenset(
            [("extension", e.name, e.problem) for e in desired.extensions if e.problem]
            + [("service", a.service, a.reason) for e in desired.extensions for a in e.route_table.set_aside])
        for kind, name, reason in sorted(problems - self._reported):
            if kind == "extension":
                log.warning("extension not managed", extra={"reconcile_id": reconcile_id, "extension": name,
                                                            "reason": reason})
            else:
                log.info("service set aside", extra={"reconcile_id": reconcile_id, "service": name, "reason": reason})
        self._reported = problems

    def _refresh_token(self, observed: ObservedState) -> None:
        """The token's digest lives on the secret's labels, so it survives our own restart."""
        for secret in observed.secrets:
            if secret.name == TOKEN_SECRET_NAME and TOKEN_DIGEST_LABEL in secret.labels:
                self.token_digest = secret.labels[TOKEN_DIGEST_LABEL]

"""Apply: execute planned actions against the Docker API (I/O; one of the Docker edge's modules,
the only ones that import docker).

Each action is idempotent on its own (content-addressed configs, create-if-missing, updates that
carry the version they were planned against), so a pass that stops half way is finished by the next
one. A failure stops the pass at once; the result says what was done and what was not, and the
error is temporary: the loop re-observes and plans again rather than retrying a stale plan.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import docker
import docker.errors

from swarmgate.errors import TemporaryError
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_FINGERPRINT_LABEL
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.edge.observe import CONNECTION_ERRORS
from swarmgate.operator.planning.actions import (
    Action,
    CreateCertificateSecret,
    CreateChannelSecret,
    CreateConfig,
    CreateService,
    MountChannelSecret,
    NoOp,
    PublishProxyConfig,
    RemoveCertificateSecret,
    RemoveConfig,
    RemoveCourier,
    UpdateService,
)
from swarmgate.operator.planning.report import ApplyResult
from swarmgate.operator.telemetry import metrics
from swarmgate.operator.telemetry.calls import CallCounter

log = logging.getLogger("swarmgate.actions")

# Test hook: `SWARMGATE_FAILPOINT=after:CreateConfig` SIGKILLs the operator right after the first action
# of that kind, so the suite can prove that a crash between two actions is repaired by the next start.
FAILPOINT_ENV = "SWARMGATE_FAILPOINT"


def _failpoint(action: Action) -> None:
    if os.environ.get(FAILPOINT_ENV) == f"after:{type(action).__name__}":
        os.kill(os.getpid(), signal.SIGKILL)


class Publisher(Protocol):
    """Where hitless configs go: the pusher, which pushes them to every proxy task."""

    def publish(self, extension: str, text: str, digest: str) -> None: ...


class KeyKeeper(Protocol):
    """Where a channel key this operator creates goes (`delivery.channel_holder`): never a log."""

    def adopt(self, key: ChannelKey, generation: int = 0) -> None: ...



@dataclass
class _Ids:
    configs: dict[str, str]
    secrets: dict[str, str]

    def resolve(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the spec with the IDs of referenced configs and secrets filled in."""
        out = copy.deepcopy(dict(spec))
        container = out["TaskTemplate"]["ContainerSpec"]
        for ref in container.get("Configs") or []:
            ref["ConfigID"] = self._id(self.configs, ref["ConfigName"], "config")
        for ref in container.get("Secrets") or []:
            ref["SecretID"] = self._id(self.secrets, ref["SecretName"], "secret")
        return out

    @staticmethod
    def _id(table: dict[str, str], name: str, kind: str) -> str:
        if name not in table:
            raise TemporaryError(f"{kind} {name!r} does not exist (yet)")
        return table[name]


def _service_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_template": spec["TaskTemplate"],
        "name": spec["Name"],
        "labels": spec.get("Labels"),
        "mode": spec.get("Mode"),
        "update_config": spec.get("UpdateConfig"),
        "rollback_config": spec.get("RollbackConfig"),
        "endpoint_spec": spec.get("EndpointSpec"),
    }


def _apply_one(api: docker.APIClient, action: Action, ids: _Ids, publisher: Publisher, calls: CallCounter,
               keys: KeyKeeper | None) -> None:
    if isinstance(action, NoOp):
        return
    if isinstance(action, PublishProxyConfig):
        publisher.publish(action.extension, action.text, action.digest)
        return
    if isinstance(action, CreateChannelSecret):
        if keys is None:
            raise TemporaryError("no keeper for a new channel key: not created")
        key = ChannelKey.generate()
        # Kept first: a crash after the secret is created must not leave a key that nobody holds.
        keys.adopt(key, action.generation)
        labels = {**action.labels, CHANNEL_FINGERPRINT_LABEL: key.fingerprint}
        calls.count("create_secret", write=True)
        created = api.create_secret(action.name, key.file_text().encode(), labels=labels)
        ids.secrets[action.name] = created["ID"]
    elif isinstance(action, MountChannelSecret):
        calls.count("update_service", write=True)
        api.update_service(action.service_id, action.version, **_service_kwargs(ids.resolve(action.spec)))
    elif isinstance(action, CreateConfig):
        calls.count("create_config", write=True)
        created = api.create_config(action.config.name, action.config.data, labels=action.config.labels)
        ids.configs[action.config.name] = created["ID"]
    elif isinstance(action, CreateService):
        calls.count("create_service", write=True)
        api.create_service(**_service_kwargs(ids.resolve(action.spec)))
    elif isinstance(action, UpdateService):
        calls.count("update_service", write=True)
        api.update_service(action.service_id, action.version, **_service_kwargs(ids.resolve(action.spec)))
    elif isinstance(action, RemoveConfig):
        calls.count("remove_config", write=True)
        api.remove_config(action.config_id)
    elif isinstance(action, CreateCertificateSecret):
        # The data (with the private key) goes to the Swarm API only; nothing here logs it.
        calls.count("create_secret", write=True)
        created = api.create_secret(action.name, action.data, labels=action.labels)
        ids.secrets[action.name] = created["ID"]
    elif isinstance(action, RemoveCertificateSecret):
        calls.count("remove_secret", write=True)
        api.remove_secret(action.secret_id)
    elif isinstance(action, RemoveCourier):
        calls.count("remove_service", write=True)
        api.remove_service(action.service_id)


def apply(
    api: docker.APIClient,
    actions: list[Action],
    *,
    observed: ObservedState,
    publisher: Publisher,
    calls: CallCounter,
    reconcile_id: str = "-",
    keys: KeyKeeper | None = None,
) -> ApplyResult:
    ids = _Ids(configs={c.name: c.id for c in observed.configs}, secrets={s.name: s.id for s in observed.secrets})
    result = ApplyResult()
    for index, action in enumerate(actions):
        try:
            _apply_one(api, action, ids, publisher, calls, keys)
        except (docker.errors.APIError, TemporaryError, *CONNECTION_ERRORS) as exc:
            if not isinstance(exc, TemporaryError):
                calls.failed()
            metrics.ACTIONS_TOTAL.labels(kind=type(action).__name__, result="error").inc()
            result.error = f"{action.describe().splitlines()[0]}: {_reason(exc)}"
            result.not_done = list(actions[index:])
            log.warning("action failed", extra={"reconcile_id": reconcile_id, "action": type(action).__name__,
                                                "error": result.error, "not_done": len(result.not_done)})
            return result
        result.done.append(action)
        if not isinstance(action, NoOp):
            metrics.ACTIONS_TOTAL.labels(kind=type(action).__name__, result="ok").inc()
            log.info(action.describe().splitlines()[0],
                     extra={"reconcile_id": reconcile_id, "action": type(action).__name__})
        _failpoint(action)
    return result


def _reason(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc) or type(exc).__name__

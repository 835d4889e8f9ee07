"""The typed actions a plan is made of: each says what it writes to the Swarm or a proxy (pure).

`plan` decides which of them a pass needs; `edge.actions` carries them out; `describe()` is what
`swarmgate plan` prints for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from swarmgate.models.swarm.ownership import CHANNEL_SECRET_NAME
from swarmgate.operator.planning.desired import ConfigObject
from swarmgate.operator.planning.service_spec import ServiceSpec
from swarmgate.operator.planning.specdiff import SpecDiff


@dataclass(frozen=True)
class CreateChannelSecret:
    name: str
    labels: dict[str, str]
    generation: int = 0  # 0: the key every proxy task starts with; N: `swarmgate rotate-key`'s

    def describe(self) -> str:
        if self.generation:
            return f"create secret {self.name} (the delivery channel's key, generation {self.generation})"
        return f"create secret {self.name} (the delivery channel's key: the operator and the proxies mount it)"


@dataclass(frozen=True)
class MountChannelSecret:
    """Mount the channel key's secrets into the operator's own service: the one write to a service
    swarmgate does not own, and only these references are added (the operator restarts once per new
    key generation, holding the keys; no proxy task is touched)."""

    service_id: str
    service_name: str
    version: int
    spec: Mapping[str, Any]
    secrets: tuple[str, ...] = (CHANNEL_SECRET_NAME,)

    def describe(self) -> str:
        return (f"update service {self.service_name}: mount secret(s) {', '.join(self.secrets)} (the operator "
                "restarts once, holding the channel key)")


@dataclass(frozen=True)
class CreateConfig:
    extension: str
    config: ConfigObject

    def describe(self) -> str:
        return f"create config {self.config.name} ({len(self.config.data)} bytes)"


# Which of an extension's owned services an action writes: its proxy, or its certificate courier.
ServiceRole = Literal["proxy", "courier"]


@dataclass(frozen=True)
class CreateService:
    extension: str
    spec: ServiceSpec
    role: ServiceRole = "proxy"

    def describe(self) -> str:
        return f"create service {self.spec['Name']}"


@dataclass(frozen=True)
class UpdateService:
    extension: str
    service_id: str
    version: int
    spec: dict[str, Any]
    diff: SpecDiff
    role: ServiceRole = "proxy"

    def describe(self) -> str:
        lines = [f"update service {self.spec['Name']} (version {self.version})"]
        lines += [f"    {change}" for change in self.diff.changes]
        return "\n".join(lines)


@dataclass(frozen=True)
class PublishProxyConfig:
    extension: str
    digest: str
    text: str

    def describe(self) -> str:
        return f"push proxy config {self.digest[:12]} to the proxies of {self.extension}"


@dataclass(frozen=True)
class RemoveConfig:
    config_id: str
    name: str

    def describe(self) -> str:
        return f"remove unused config {self.name}"


@dataclass(frozen=True)
class RemoveCourier:
    """Remove an extension's certificate courier (an owned service) once plain delivery needs it no
    more and its tasks have dropped their files."""

    extension: str
    service_id: str
    name: str

    def describe(self) -> str:
        return f"remove service {self.name} (the certificate courier: {self.extension} now uses plain delivery)"


@dataclass(frozen=True)
class CreateCertificateSecret:
    """Store a certificate the ACME worker brought back in an owned secret (the chain, then its key).

    `data` holds the private key: it is left out of `repr` and of `describe`, which says only public
    facts (the host and the certificate's validity)."""

    name: str
    labels: dict[str, str]
    host: str
    not_after: str
    data: bytes = field(repr=False, compare=False)

    def describe(self) -> str:
        return f"create secret {self.name} (the ACME certificate of {self.host}, valid until {self.not_after})"


@dataclass(frozen=True)
class RemoveCertificateSecret:
    """Remove an owned ACME certificate's secret that nothing serves or mounts any more."""

    secret_id: str
    name: str
    host: str

    def describe(self) -> str:
        return f"remove secret {self.name} (an obsolete ACME certificate of {self.host})"


HoldReason = Literal["rolled_back", "nginx_rejected"]
HOLD_REASONS: tuple[HoldReason, ...] = ("rolled_back", "nginx_rejected")


@dataclass(frozen=True)
class NoOp:
    """Nothing to write. With `hold`, the reason an extension's change is deliberately not applied:

    * `rolled_back`: Swarm rolled the proxy service back from exactly the spec this pass would write
      again; writing it again would roll the proxies again (and again: a loop against Swarm).
    * `nginx_rejected`: `nginx -t` rejects the config this pass rendered; nothing of the extension
      changes, so its proxies keep the last good config.

    Either way the operator waits for the desired spec (or config) to change."""

    extension: str | None = None
    hold: HoldReason | None = None
    detail: str = ""

    def describe(self) -> str:
        if self.hold is None:
            return "nothing to do: converged"
        return f"hold {self.extension}: {self.detail}"


Action = (CreateChannelSecret | CreateConfig | CreateService | UpdateService | PublishProxyConfig | RemoveConfig
          | MountChannelSecret | CreateCertificateSecret | RemoveCertificateSecret | RemoveCourier | NoOp)


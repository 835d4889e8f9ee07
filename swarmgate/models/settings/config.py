"""Interlock-compatible configuration: TOML text → typed, frozen `Config` (pure apart from `load_config`).

Field names are snake_case; their aliases are Interlock's exact TOML keys, so an existing Interlock
file loads as it is. Unknown keys are errors (with the closest known key as a hint), and every failure
is a `ConfigError` whose message is one line: `FILE: Key.Path: what was expected, got what`.
Keys that only served Interlock's separate extension service are accepted and reported in `notices`.
`load_config` reads one file; everything else here is pure.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    model_validator,
)

from swarmgate.errors import ConfigError
from swarmgate.models.settings.duration import Duration
from swarmgate.models.settings.nginx_options import NginxOptions
from swarmgate.models.settings.numbers import NonNegativeInt, Port
from swarmgate.models.settings.user_file import read_user_file
from swarmgate.models.settings.validation_errors import first_error_line, model_keys

LOADBALANCER_CONSTRAINT = "node.labels.nodetype==loadbalancer"

# Keys Interlock needed for its separate extension (and config) service. swarmgate renders and ships
# the proxy config itself, so these have nothing to configure; they are accepted so files keep working.
_NOT_NEEDED = {
    "image": "Image",
    "args": "Args",
    "service_name": "ServiceName",
    "labels": "Labels",
    "container_labels": "ContainerLabels",
    "constraints": "Constraints",
    "placement_preferences": "PlacementPreferences",
    "config_image": "ConfigImage",
    "config_service_name": "ConfigServiceName",
}
# nginx options with no counterpart in what swarmgate renders: accepted, and said so when set.
_NOT_APPLIED = {
    "SSLDefaultDHParam": "swarmgate does not generate DH parameters; give a file in SSLDefaultDHParamPath",
    "SSLVerify": "swarmgate does not verify client certificates (no label asks for it)",
}
_EXTENSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LISTEN_ADDR = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9_.-]*)?:?(?P<port>\d{1,5})$")


def split_listen_addr(value: str) -> tuple[str, int]:
    """`:8080` → ("", 8080) (all interfaces), `127.0.0.1:0` → ("127.0.0.1", 0) (any free port).

    The one parser of ListenAddr: the config validates with it and the endpoint binds with it."""
    match = _LISTEN_ADDR.match(value)
    if match is None or not 0 <= int(match.group("port")) <= 65535:
        raise ValueError(f"expected an address such as ':8080' or '0.0.0.0:8080', got {value!r}")
    return (match.group("host") or "").strip("[]"), int(match.group("port"))


def _listen_addr(value: str) -> str:
    if split_listen_addr(value)[1] == 0:
        raise ValueError(f"expected a port from 1 to 65535, got {value!r}")
    return value


StrMap = dict[StrictStr, StrictStr]
StrList = tuple[StrictStr, ...]


class Extension(BaseModel):
    """One `[Extensions.NAME]` table: one proxy service and the service cluster it routes."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    name: StrictStr = "default"
    # Interlock's extension service: accepted, not needed (see `Config.notices`).
    image: StrictStr | None = Field(None, alias="Image")
    args: StrList = Field((), alias="Args")
    service_name: StrictStr | None = Field(None, alias="ServiceName")
    labels: StrMap = Field(default_factory=dict, alias="Labels")
    container_labels: StrMap = Field(default_factory=dict, alias="ContainerLabels")
    constraints: StrList = Field((), alias="Constraints")
    placement_preferences: StrList = Field((), alias="PlacementPreferences")
    config_image: StrictStr | None = Field(None, alias="ConfigImage")
    config_service_name: StrictStr | None = Field(None, alias="ConfigServiceName")
    # swarmgate uses no overlay networks: upstreams are node address and host port.
    networks: StrList = Field((), alias="Networks")
    # The proxy service.
    proxy_image: StrictStr = Field("nginx:alpine", alias="ProxyImage")
    proxy_args: StrList = Field((), alias="ProxyArgs")
    proxy_service_name: StrictStr = Field("interlock-proxy", alias="ProxyServiceName")
    proxy_config_path: StrictStr = Field("/etc/nginx/nginx.conf", alias="ProxyConfigPath")
    proxy_labels: StrMap = Field(default_factory=dict, alias="ProxyLabels")
    proxy_container_labels: StrMap = Field(default_factory=dict, alias="ProxyContainerLabels")
    proxy_replicas: NonNegativeInt = Field(2, alias="ProxyReplicas")
    proxy_stop_signal: StrictStr = Field("SIGQUIT", alias="ProxyStopSignal")
    proxy_stop_grace_period: Duration = Field(5.0, alias="ProxyStopGracePeriod")
    proxy_constraints: StrList = Field((), alias="ProxyConstraints")
    proxy_placement_preferences: StrList = Field((), alias="ProxyPlacementPreferences")
    proxy_update_delay: Duration = Field(0.0, alias="ProxyUpdateDelay")
    service_cluster: StrictStr = Field("", alias="ServiceCluster")
    publish_mode: Literal["ingress", "host"] = Field("ingress", alias="PublishMode")
    published_port: Port = Field(80, alias="PublishedPort")
    target_port: Port = Field(80, alias="TargetPort")
    published_ssl_port: Port = Field(443, alias="PublishedSSLPort")
    target_ssl_port: Port = Field(443, alias="TargetSSLPort")
    template: StrictStr | None = Field(None, alias="Template")
    config: NginxOptions = Field(default_factory=NginxOptions, alias="Config")
    hitless_service_update: StrictBool = Field(True, alias="HitlessServiceUpdate")

    @model_validator(mode="before")
    @classmethod
    def _host_mode_pins_to_load_balancers(cls, data: Any) -> Any:
        # In host mode the proxy binds 80/443 on the node itself, so it belongs on the nodes the seed
        # labels `nodetype=loadbalancer`; an explicit ProxyConstraints (even []) wins.
        if not isinstance(data, dict):
            return data
        mode = data.get("PublishMode", data.get("publish_mode"))
        if mode == "host" and "ProxyConstraints" not in data and "proxy_constraints" not in data:
            return {**data, "ProxyConstraints": (LOADBALANCER_CONSTRAINT,)}
        return data

    @model_validator(mode="after")
    def _distinct_ports(self) -> Extension:
        if self.target_port == self.target_ssl_port:
            raise ValueError(f"TargetPort and TargetSSLPort must differ, both are {self.target_port}")
        if self.published_port == self.published_ssl_port:
            raise ValueError(
                f"PublishedPort and PublishedSSLPort must differ, both are {self.published_port}"
            )
        return self


class Config(BaseModel):
    """The operator's whole configuration (Interlock's core keys plus its extensions)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    listen_addr: Annotated[StrictStr, AfterValidator(_listen_addr)] = Field(":8080", alias="ListenAddr")
    docker_url: StrictStr | None = Field(None, alias="DockerURL")
    tls_ca_cert: StrictStr | None = Field(None, alias="TLSCACert")
    tls_cert: StrictStr | None = Field(None, alias="TLSCert")
    tls_key: StrictStr | None = Field(None, alias="TLSKey")
    allow_insecure: StrictBool = Field(False, alias="AllowInsecure")
    poll_interval: Duration = Field(3.0, alias="PollInterval")
    endpoint_override: StrictStr | None = Field(None, alias="EndpointOverride")
    extensions: dict[str, Extension] = Field(alias="Extensions")
    notices: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _name_extensions_and_collect_notices(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        key = "Extensions" if "Extensions" in data else "extensions"
        tables = data.get(key)
        notices: list[str] = []
        if isinstance(tables, dict):
            named: dict[str, Any] = {}
            for name, table in tables.items():
                if not _EXTENSION_NAME.match(name):
                    raise ValueError(
                        f"Extensions.{name}: expected a name of letters, digits, '_', '.', '-' (max 63)"
                    )
                if isinstance(table, dict):
                    table = {**table, "name": name}
                    for field, toml_key in _NOT_NEEDED.items():
                        if toml_key in table or field in table:
                            notices.append(
                                f"Extensions.{name}.{toml_key}: not needed by swarmgate "
                                "(no separate extension service); ignored"
                            )
                    options = table.get("Config")
                    for option, why in _NOT_APPLIED.items():
                        if isinstance(options, dict) and option in options:
                            notices.append(f"Extensions.{name}.Config.{option}: {why}; ignored")
                    if table.get("Networks") or table.get("networks"):
                        notices.append(
                            f"Extensions.{name}.Networks: swarmgate routes to node address and host port, "
                            "not over overlay networks; ignored"
                        )
                elif isinstance(table, Extension) and table.name != name:
                    # The table's key is the extension's name, however the object was built.
                    table = table.model_copy(update={"name": name})
                named[name] = table
            data[key] = named
        # Notices are computed, never read from the file.
        data["notices"] = tuple(sorted(notices))
        return data

    @model_validator(mode="after")
    def _at_least_one_extension(self) -> Config:
        if not self.extensions:
            raise ValueError("Extensions: at least one [Extensions.NAME] table is required")
        return self

    @property
    def listen_port(self) -> int:
        """The TCP port of `ListenAddr` (`":8080"` → 8080)."""
        return split_listen_addr(self.listen_addr)[1]


def _known_keys(parent: tuple[str | int, ...]) -> tuple[str, ...]:
    if len(parent) == 0:
        return model_keys(Config)
    if len(parent) == 2 and parent[0] in ("Extensions", "extensions"):
        return model_keys(Extension)
    if len(parent) == 3 and parent[2] in ("Config", "config"):
        return model_keys(NginxOptions)
    return ()


def parse_config(text: str, *, source: str) -> Config:
    """A `Config` from TOML text; `source` names the file in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return Config.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {first_error_line(exc, _known_keys)}") from None
    except ValueError as exc:  # raised by a before-validator outside pydantic's error collection
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> Config:
    """Read and parse one TOML file (the only I/O in this module)."""
    text = read_user_file(path)
    return parse_config(text, source=str(path))

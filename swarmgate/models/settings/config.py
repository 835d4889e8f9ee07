"""Interlock-compatible configuration: TOML text → typed, frozen `Config` (pure apart from `load_config`).

Field names are snake_case; their aliases are Interlock's exact TOML keys, so an existing Interlock
file loads as it is. Unknown keys are errors (with the closest known key as a hint), and every
failure is a `ConfigError` whose message is one line: `FILE: Key.Path: what was expected, got what`.
Keys that only served Interlock's separate extension service are accepted and reported in `notices`.
Each `[Extensions.NAME]` table is an `Extension` (module `extension`); this module holds the whole
file, the checks across extensions, and the parsing. `load_config` reads one file; everything else
here is pure.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

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
from swarmgate.models.settings.duration import duration_in
from swarmgate.models.settings.extension import Extension
from swarmgate.models.settings.nginx_options import NginxOptions
from swarmgate.models.settings.numbers import int_in
from swarmgate.models.settings.text_rules import (
    absolute_path,
    acme_directory_url,
    control_character_at,
    control_source,
    dashboard_url,
    docker_engine_url,
    email_address,
    endpoint_url,
)
from swarmgate.models.settings.user_file import parse_user_text, read_user_file
from swarmgate.models.settings.validation_errors import first_error_line, model_keys

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
# ACME's defaults: 20 hosts is more than most services name; 50 orders an hour is half of what Let's
# Encrypt allows one account (300 new orders in 3 hours), so labels alone can never exhaust it.
ACME_MAX_HOSTS_PER_SERVICE = 20
ACME_ORDERS_PER_HOUR = 50
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


class Config(BaseModel):
    """The operator's whole configuration (Interlock's core keys plus its extensions)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    listen_addr: Annotated[StrictStr, AfterValidator(_listen_addr)] = Field(":8080", alias="ListenAddr")
    docker_url: Annotated[StrictStr, AfterValidator(docker_engine_url)] | None = Field(None, alias="DockerURL")
    tls_ca_cert: StrictStr | None = Field(None, alias="TLSCACert")
    tls_cert: StrictStr | None = Field(None, alias="TLSCert")
    tls_key: StrictStr | None = Field(None, alias="TLSKey")
    allow_insecure: StrictBool = Field(False, alias="AllowInsecure")
    # Docker events trigger passes in between; a resync more often than every second only burns CPU
    # (`PollInterval = "0s"` made 31 passes a second on an idle cluster).
    poll_interval: Annotated[float, duration_in(1.0, 3600.0)] = Field(3.0, alias="PollInterval")
    endpoint_override: Annotated[StrictStr, AfterValidator(endpoint_url)] | None = Field(None,
                                                                                         alias="EndpointOverride")
    extensions: dict[str, Extension] = Field(alias="Extensions")
    # swarmgate's own key: who else may reach the proxies' control server (the Swarm's node addresses
    # always may). Only for an operator that runs outside the Swarm, as a plain process.
    control_sources: tuple[Annotated[StrictStr, AfterValidator(control_source)], ...] = Field(
        (), alias="ControlSources")
    # swarmgate's own keys: automatic certificates (ACME) for services labelled `swarmgate.acme=true`.
    # Without a directory those services are set aside; the CA bundle is what the operator trusts for
    # the ACME server's HTTPS (a private CA's; none: the system's roots).
    acme_directory: Annotated[StrictStr, AfterValidator(acme_directory_url)] | None = Field(None, alias="ACMEDirectory")
    acme_email: Annotated[StrictStr, AfterValidator(email_address)] | None = Field(None, alias="ACMEEmail")
    acme_ca_bundle: Annotated[StrictStr, AfterValidator(absolute_path)] | None = Field(None, alias="ACMECABundle")
    # Bounds on what labels can make the leader order (docs/labels.md#limits): one service's labels
    # could otherwise name hundreds of hosts and spend the account's rate limit at the CA for everyone.
    acme_max_hosts_per_service: Annotated[int, int_in(1, 100)] = Field(ACME_MAX_HOSTS_PER_SERVICE,
                                                                       alias="ACMEMaxHostsPerService")
    acme_orders_per_hour: Annotated[int, int_in(1, 1000)] = Field(ACME_ORDERS_PER_HOUR, alias="ACMEOrdersPerHour")
    # swarmgate's own keys: the read-only status page (`/` on ListenAddr, or on an address of its own,
    # or off) and the Grafana dashboard each of its routes links to.
    status_page: StrictBool = Field(True, alias="StatusPage")
    status_page_addr: Annotated[StrictStr, AfterValidator(_listen_addr)] | None = Field(None, alias="StatusPageAddr")
    grafana_dashboard_url: Annotated[StrictStr, AfterValidator(dashboard_url)] | None = Field(
        None, alias="GrafanaDashboardURL")
    notices: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _name_extensions_and_collect_notices(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        control = control_character_at(data)
        if control is not None:
            where, char = control
            raise ValueError(f"{'.'.join(str(p) for p in where) or '(top level)'}: control character "
                             f"U+{ord(char):04X} is not allowed in a value")
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
                    if isinstance(options, dict) and options.get("TCPOptions"):
                        # A stream block with no server in it routes nothing, and the proxy's nginx may
                        # not have the stream module at all (Debian's loads it as a separate package).
                        notices.append(f"Extensions.{name}.Config.TCPOptions: swarmgate routes no TCP "
                                       "services (no stream block); ignored")
                        table["Config"] = {k: v for k, v in options.items() if k != "TCPOptions"}
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

    @model_validator(mode="after")
    def _extensions_do_not_collide(self) -> Config:
        # Two extensions with one proxy service would rewrite each other's spec on every pass.
        owners: dict[str, str] = {}
        for name, ext in sorted(self.extensions.items()):
            other = owners.setdefault(ext.proxy_service_name, name)
            if other != name:
                raise ValueError(f"Extensions.{name}.ProxyServiceName: {ext.proxy_service_name!r} is also the proxy "
                                 f"service of extension {other!r}; each extension needs its own")
        # Ingress ports are published on every node of the Swarm; host-mode ports on the nodes the
        # constraints pick, so two host-mode proxies may share a port on disjoint sets of nodes.
        ports: dict[int, tuple[str, str, frozenset[str]]] = {}
        for name, ext in sorted(self.extensions.items()):
            for key, port in (("PublishedPort", ext.published_port), ("PublishedSSLPort", ext.published_ssl_port)):
                placed = frozenset(ext.proxy_constraints)
                seen = ports.setdefault(port, (name, ext.publish_mode, placed))
                if seen[0] == name:
                    continue
                if "ingress" in (seen[1], ext.publish_mode) or seen[2] == placed:
                    raise ValueError(f"Extensions.{name}.{key}: port {port} is also published by extension "
                                     f"{seen[0]!r} on the same nodes; give it another port or other ProxyConstraints")
        return self

    @model_validator(mode="after")
    def _status_page_has_its_own_port(self) -> Config:
        if self.status_page_addr is not None and split_listen_addr(self.status_page_addr)[1] == self.listen_port:
            raise ValueError(f"StatusPageAddr: {self.status_page_addr!r} has ListenAddr's port; leave StatusPageAddr "
                             "out to serve the page on ListenAddr, or give it another port")
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
    return parse_user_text(lambda: _parse(text, source=source), source=source, what="TOML")


def _parse(text: str, *, source: str) -> Config:
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

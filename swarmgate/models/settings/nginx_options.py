"""The `[Extensions.NAME.Config]` table: nginx tuning options with Interlock's defaults (pure).

These values come from the operator's own TOML, which is trusted input: they are still typed and
checked here so that a typo fails at start-up with a clear message instead of as a broken proxy, but
the raw option lists (`GlobalOptions`, `HTTPOptions`, `TCPOptions`) are passed through as written.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
)

from swarmgate.models.settings.duration import Duration
from swarmgate.models.settings.numbers import PositiveInt

_SIZE = re.compile(r"^\d+[kKmMgG]?$")
_BUFFERS = re.compile(r"^\d+\s+\d+[kKmM]?$")
_PLAIN = re.compile(r"^[^\s;{}'\"\\$#]+$")


def _size(value: str) -> str:
    if not _SIZE.match(value):
        raise ValueError(f"expected an nginx size such as '1m' or '8k', got {value!r}")
    return value


def _buffers(value: str) -> str:
    if not _BUFFERS.match(value):
        raise ValueError(f"expected a number and a size such as '4 8k', got {value!r}")
    return " ".join(value.split())


def _plain(value: str) -> str:
    # Paths, user names and cipher lists are written unquoted into nginx; refuse what would end a
    # directive or open a block, so a typo cannot turn into a different configuration.
    if not _PLAIN.match(value):
        raise ValueError(
            f"expected a single word without spaces, quotes, ';', '{{', '}}', '$' or '#', got {value!r}"
        )
    return value


def _workers(value: object) -> str:
    if isinstance(value, bool):
        raise ValueError(f"expected a positive integer or 'auto', got {value!r}")
    if isinstance(value, int) and value > 0:
        return str(value)
    if isinstance(value, str) and (value == "auto" or (value.isdigit() and int(value) > 0)):
        return value
    raise ValueError(f"expected a positive integer or 'auto', got {value!r}")


def _log_format(value: str) -> str:
    if "'" in value or "\n" in value:
        raise ValueError("expected a log format without single quotes or newlines")
    return value


def _option_lines(values: tuple[str, ...]) -> tuple[str, ...]:
    # Interlock users write these with or without the trailing ';': accept both.
    out = []
    for raw in values:
        line = raw.strip()
        if line and not line.endswith((";", "}")):
            line += ";"
        if line:
            out.append(line)
    return tuple(out)


def _one_or_many(value: object) -> object:
    # Interlock documents SSLOpts as one string; a list of lines is accepted too.
    return (value,) if isinstance(value, str) else value


def _version(value: object) -> object:
    # TOML reads `HTTPVersion = 1.1` as a float.
    return str(value) if isinstance(value, float) else value


Size = Annotated[StrictStr, AfterValidator(_size)]
Plain = Annotated[StrictStr, AfterValidator(_plain)]
OptionLines = Annotated[tuple[StrictStr, ...], AfterValidator(_option_lines)]
LogFormat = Annotated[StrictStr, AfterValidator(_log_format)]

DEFAULT_MAIN_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for"'
)
DEFAULT_TRACE_LOG_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" "$http_x_forwarded_for" '
    "reqid=$swarmgate_request_id host=$host upstream=$upstream_addr "
    "request_time=$request_time upstream_response_time=$upstream_response_time"
)


class NginxOptions(BaseModel):
    """Every key of Interlock's nginx extension `Config` table; defaults are Interlock's documented ones."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    user: Plain = Field("nginx", alias="User")
    pid_path: Plain = Field("/var/run/proxy.pid", alias="PidPath")
    worker_processes: Annotated[str, BeforeValidator(_workers)] = Field("1", alias="WorkerProcesses")
    rlimit_nofile: PositiveInt = Field(
        65535, validation_alias=AliasChoices("RlimitNoFile", "RLimitNoFile", "rlimit_nofile")
    )
    max_connections: PositiveInt = Field(1024, alias="MaxConnections")
    connect_timeout: PositiveInt = Field(600, alias="ConnectTimeout")
    send_timeout: PositiveInt = Field(600, alias="SendTimeout")
    read_timeout: PositiveInt = Field(600, alias="ReadTimeout")
    keepalive_timeout: Duration = Field(75.0, alias="KeepaliveTimeout")
    client_max_body_size: Size = Field("1m", alias="ClientMaxBodySize")
    client_body_buffer_size: Size = Field("8k", alias="ClientBodyBufferSize")
    client_header_buffer_size: Size = Field("1k", alias="ClientHeaderBufferSize")
    large_client_header_buffers: Annotated[StrictStr, AfterValidator(_buffers)] = Field(
        "4 8k", alias="LargeClientHeaderBuffers"
    )
    client_body_timeout: Duration = Field(60.0, alias="ClientBodyTimeout")
    underscores_in_headers: StrictBool = Field(False, alias="UnderscoresInHeaders")
    server_names_hash_bucket_size: PositiveInt = Field(128, alias="ServerNamesHashBucketSize")
    upstream_zone_size: PositiveInt = Field(64, alias="UpstreamZoneSize")
    ip_hash: StrictBool = Field(False, alias="IPHash")
    ssl_ciphers: Plain = Field("HIGH:!aNULL:!MD5", alias="SSLCiphers")
    ssl_protocols: Annotated[StrictStr, AfterValidator(lambda v: " ".join(_plain(p) for p in v.split()))] = (
        Field("TLSv1.2", alias="SSLProtocols")
    )
    ssl_opts: Annotated[OptionLines, BeforeValidator(_one_or_many)] = Field((), alias="SSLOpts")
    ssl_default_dh_param: PositiveInt = Field(1024, alias="SSLDefaultDHParam")
    ssl_default_dh_param_path: Annotated[StrictStr, AfterValidator(lambda v: v and _plain(v))] = Field(
        "", alias="SSLDefaultDHParamPath"
    )
    ssl_verify: StrictStr = Field("required", alias="SSLVerify")
    hide_info_headers: StrictBool = Field(False, alias="HideInfoHeaders")
    access_log_path: Plain = Field("/dev/stdout", alias="AccessLogPath")
    error_log_path: Plain = Field("/dev/stdout", alias="ErrorLogPath")
    main_log_format: LogFormat = Field(DEFAULT_MAIN_LOG_FORMAT, alias="MainLogFormat")
    trace_log_format: LogFormat = Field(DEFAULT_TRACE_LOG_FORMAT, alias="TraceLogFormat")
    http_version: Annotated[Literal["1.0", "1.1"], BeforeValidator(_version)] = Field(
        "1.1", alias="HTTPVersion"
    )
    global_options: OptionLines = Field((), alias="GlobalOptions")
    http_options: OptionLines = Field((), alias="HTTPOptions")
    tcp_options: OptionLines = Field((), alias="TCPOptions")

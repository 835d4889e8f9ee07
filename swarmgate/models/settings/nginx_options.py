"""The `[Extensions.NAME.Config]` table: nginx tuning options with Interlock's defaults (pure).

Every value is typed and bounded by what nginx takes (checked against Debian's nginx 1.22 with
`nginx -t`, see tests/property/test_config_values.py), so that whatever `check-config` accepts renders
to a config nginx accepts: a typo fails at start-up with a clear message instead of as a broken proxy
on every LB node. The raw lists (`GlobalOptions`, `HTTPOptions`, `TCPOptions`, `SSLOpts`) are checked
for nginx syntax (`nginx_syntax`): one complete directive per entry.
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
    model_validator,
)

from swarmgate.models.settings import log_formats
from swarmgate.models.settings.duration import NGINX_MAX_SECONDS, NginxDuration, duration_in
from swarmgate.models.settings.nginx_syntax import log_format, option_entries
from swarmgate.models.settings.numbers import NonNegativeInt, int_in
from swarmgate.models.settings.text_rules import absolute_path

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"^(\d{1,12})([kKmMgG]?)$")
_BUFFERS = re.compile(r"^(\d{1,6})\s+(\S+)$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_CIPHERS = re.compile(r"^[A-Za-z0-9!+@=:,._-]{1,1024}$")  # written unquoted: no space, ';' or quote
_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")


def _bytes(value: str, *, units: str) -> int:
    match = _SIZE.match(value)
    if match is None or match.group(2).lower() not in units:
        shown = "'8k' or '1m'" if "g" not in units else "'1m' or '1g'"
        raise ValueError(f"expected an nginx size such as {shown}, got {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def _size(low: int, high: int, *, units: str = "km") -> AfterValidator:
    """A size nginx parses (`ngx_parse_size` knows k and m; `ngx_parse_offset` g too), in bytes low..high."""

    def check(value: str) -> str:
        if not low <= _bytes(value, units="" + units) <= high:
            raise ValueError(f"expected an nginx size from {_human(low)} to {_human(high)}, got {value!r}")
        return value

    return AfterValidator(check)


def _human(size: int) -> str:
    for unit in ("g", "m", "k"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def _buffers(value: str) -> str:
    # nginx: the size must hold at least `connection_pool_size` (512 on 64-bit builds).
    match = _BUFFERS.match(value.strip())
    expected = f"expected a number 1-4096 and a size 512-64m such as '4 8k', got {value!r}"
    if match is None or not 1 <= int(match.group(1)) <= 4096:
        raise ValueError(expected)
    try:
        size = _bytes(match.group(2), units="km")
    except ValueError:
        raise ValueError(expected) from None
    if not 512 <= size <= 64 * 1024**2:
        raise ValueError(expected)
    return f"{int(match.group(1))} {match.group(2)}"


def _user(value: str) -> str:
    if not _USER.match(value):
        raise ValueError(f"expected a user name such as 'nginx' or 'www-data', got {value!r}")
    return value


def _log_path(special: str) -> AfterValidator:
    def check(value: str) -> str:
        return value if value == special else absolute_path(value)

    return AfterValidator(check)


def _workers(value: object) -> str:
    # nginx spawns at most NGX_MAX_PROCESSES (1024) processes.
    expected = f"expected an integer 1-1024 or 'auto', got {value!r}"
    if isinstance(value, bool):
        raise ValueError(expected)
    if isinstance(value, int) and 1 <= value <= 1024:
        return str(value)
    if isinstance(value, str) and (value == "auto" or (re.fullmatch(r"[0-9]{1,4}", value) and 1 <= int(value) <= 1024)):
        return value if value == "auto" else str(int(value))
    raise ValueError(expected)


def _ciphers(value: str) -> str:
    # nginx hands the list to OpenSSL (SSL_CTX_set_cipher_list) and refuses the config when no cipher
    # matches; Python's ssl module asks the same library the same question.
    if not _CIPHERS.match(value):
        raise ValueError(f"expected an OpenSSL cipher list such as 'HIGH:!aNULL:!MD5', got {value!r}")
    import ssl  # only for a config that sets SSLCiphers: every offline command imports this module

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(value)
    except ssl.SSLError:
        raise ValueError(f"expected an OpenSSL cipher list that names at least one cipher, got {value!r}") from None
    return value


def _protocols(value: str) -> str:
    parts = value.split()
    if not parts or any(p not in _PROTOCOLS for p in parts):
        raise ValueError(f"expected protocols out of {', '.join(_PROTOCOLS)}, got {value!r}")
    return " ".join(parts)


def _one_or_many(value: object) -> object:
    # Interlock documents SSLOpts as one string; a list of lines is accepted too.
    return (value,) if isinstance(value, str) else value


def _version(value: object) -> object:
    # TOML reads `HTTPVersion = 1.1` as a float.
    return str(value) if isinstance(value, float) else value


def _options(key: str) -> AfterValidator:
    return AfterValidator(lambda values: option_entries(values, key=key))


def _plain_path(value: str) -> str:
    return value and absolute_path(value)


# Whole seconds for the proxy_*_timeout directives: at least 1, at most what nginx timers hold.
Seconds = Annotated[int, int_in(1, int(NGINX_MAX_SECONDS))]
BufferSize = Annotated[StrictStr, _size(1, 64 * 1024**2)]
LogFormat = Annotated[StrictStr, AfterValidator(log_format)]
Options = tuple[StrictStr, ...]


class NginxOptions(BaseModel):
    """Every key of Interlock's nginx extension `Config` table; defaults are Interlock's documented ones."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    user: Annotated[StrictStr, AfterValidator(_user)] = Field("nginx", alias="User")
    pid_path: Annotated[StrictStr, AfterValidator(absolute_path)] = Field("/var/run/proxy.pid", alias="PidPath")
    worker_processes: Annotated[str, BeforeValidator(_workers)] = Field("1", alias="WorkerProcesses")
    # Linux refuses more open files than fs.nr_open (1048576 unless raised); a worker needs some.
    rlimit_nofile: Annotated[int, int_in(64, 1_048_576)] = Field(
        65535, validation_alias=AliasChoices("RlimitNoFile", "RLimitNoFile", "rlimit_nofile")
    )
    # nginx needs more connections than listening sockets, and allocates them all per worker.
    max_connections: Annotated[int, int_in(16, 1_048_576)] = Field(1024, alias="MaxConnections")
    connect_timeout: Seconds = Field(600, alias="ConnectTimeout")
    send_timeout: Seconds = Field(600, alias="SendTimeout")
    read_timeout: Seconds = Field(600, alias="ReadTimeout")
    keepalive_timeout: NginxDuration = Field(75.0, alias="KeepaliveTimeout")
    client_max_body_size: Annotated[StrictStr, _size(0, 1024**4, units="kmg")] = Field("1m", alias="ClientMaxBodySize")
    client_body_buffer_size: BufferSize = Field("8k", alias="ClientBodyBufferSize")
    client_header_buffer_size: BufferSize = Field("1k", alias="ClientHeaderBufferSize")
    large_client_header_buffers: Annotated[StrictStr, AfterValidator(_buffers)] = Field(
        "4 8k", alias="LargeClientHeaderBuffers"
    )
    client_body_timeout: Annotated[float, duration_in(0.001, NGINX_MAX_SECONDS)] = Field(
        60.0, alias="ClientBodyTimeout"
    )
    underscores_in_headers: StrictBool = Field(False, alias="UnderscoresInHeaders")
    server_names_hash_bucket_size: Annotated[int, int_in(1, 32768)] = Field(128, alias="ServerNamesHashBucketSize")
    # In KiB, one zone per upstream pool: nginx refuses a zone under 32k ("too small").
    upstream_zone_size: Annotated[int, int_in(32, 8192)] = Field(64, alias="UpstreamZoneSize")
    ip_hash: StrictBool = Field(False, alias="IPHash")
    ssl_ciphers: Annotated[StrictStr, AfterValidator(_ciphers)] = Field("HIGH:!aNULL:!MD5", alias="SSLCiphers")
    ssl_protocols: Annotated[StrictStr, AfterValidator(_protocols)] = Field("TLSv1.2", alias="SSLProtocols")
    ssl_opts: Annotated[Options, BeforeValidator(_one_or_many), _options("SSLOpts")] = Field((), alias="SSLOpts")
    ssl_default_dh_param: NonNegativeInt = Field(1024, alias="SSLDefaultDHParam")
    ssl_default_dh_param_path: Annotated[StrictStr, AfterValidator(_plain_path)] = Field(
        "", alias="SSLDefaultDHParamPath"
    )
    ssl_verify: StrictStr = Field("required", alias="SSLVerify")
    hide_info_headers: StrictBool = Field(False, alias="HideInfoHeaders")
    # Not Interlock's: `false` drops x-request-id (Interlock's, on requests and responses) and nginx's
    # `$request_id`, 23% of its instructions per request on loopback (random bytes and a getpid each);
    # a client's own x-request-id still reaches the task, as nginx passes request headers on.
    request_ids: StrictBool = Field(True, alias="RequestIDs")
    # The template writes `access_log PATH main;`: "off" would be a file named "off" there, so a path.
    access_log_path: Annotated[StrictStr, AfterValidator(absolute_path)] = Field("/dev/stdout", alias="AccessLogPath")
    # Not Interlock's: the access log is written in chunks of up to this size, at least every
    # AccessLogFlush ("0": a write(2) per request, as Interlock). In the proxy task the log is a pipe
    # Docker reads, and a write per request cost the loopback benchmark's nginx 14% more CPU per
    # request (bench/render-ablation.md). 4k is the pipe's PIPE_BUF: each chunk of whole
    # lines reaches the pipe in one piece, so lines of several workers never interleave.
    access_log_buffer: Annotated[StrictStr, _size(0, 4096, units="k")] = Field("4k", alias="AccessLogBuffer")
    access_log_flush: Annotated[float, duration_in(0.001, 60.0)] = Field(1.0, alias="AccessLogFlush")
    error_log_path: Annotated[StrictStr, _log_path("stderr")] = Field("/dev/stdout", alias="ErrorLogPath")
    main_log_format: LogFormat = Field(log_formats.DEFAULT_MAIN_LOG_FORMAT, alias="MainLogFormat")
    trace_log_format: LogFormat = Field(log_formats.DEFAULT_TRACE_LOG_FORMAT, alias="TraceLogFormat")
    http_version: Annotated[Literal["1.0", "1.1"], BeforeValidator(_version)] = Field(
        "1.1", alias="HTTPVersion"
    )
    # Not Interlock's: idle connections each worker keeps open to each pool's tasks (0: none, as
    # Interlock; every request then opens a connection to its task). On by default: in the loopback
    # peers benchmark, 64 took swarmgate's render from 0.28x a minimal nginx proxy's throughput to
    # 0.74x (docs/benchmarks/data-plane.md). nginx reserves the idle slots per upstream block when it
    # loads the config (about 150 bytes each, in every worker generation): at 10,000 services, 16 took
    # `nginx -t` from 119 to 144 MiB, 32 to 167 MiB.
    upstream_keepalive: Annotated[int, int_in(0, 4096)] = Field(16, alias="UpstreamKeepalive")
    # The race it must not lose: a backend closes a connection at its own idle timeout while nginx sends
    # a request on it; nginx retries an idempotent request, never a POST (rightly), which is then a 502.
    # nginx closes its idle connections after this, so it closes first wherever the backend's idle
    # timeout is longer; the shortest common one is gunicorn's 2 s (Node, uvicorn, Apache: 5 s). A
    # service whose tasks close sooner says so with `swarmgate.backend_idle_timeout`.
    upstream_keepalive_timeout: Annotated[float, duration_in(0.001, NGINX_MAX_SECONDS)] = Field(
        1.5, alias="UpstreamKeepaliveTimeout"
    )
    # Not Interlock's: how long an old worker may serve its open connections after a reload before
    # nginx closes them (0: as long as they last, nginx's own default). A websocket can stay open for
    # hours, and each reload would otherwise leave a worker generation (and its copy of the config)
    # behind; ingress-nginx uses 240 s. A `worker_shutdown_timeout` in GlobalOptions takes its place.
    worker_shutdown_timeout: NginxDuration = Field(240.0, alias="WorkerShutdownTimeout")
    # Not Interlock's: round-robin pools are served by one Lua balancer (`balancer_by_lua`, from
    # lua-nginx-module: Debian's libnginx-mod-http-lua, or OpenResty) instead of one `upstream` block
    # each. Stock nginx finds an upstream chosen at run time by scanning every upstream block, so the
    # cost of a request grows with the number of services; the balancer's is flat. The proxy image
    # must carry the module (nginx -t rejects the config otherwise, and the last good one stays).
    lua_balancer: StrictBool = Field(False, alias="LuaBalancer")
    # Not Interlock's: hosts that need nothing of their own share one server (a map picks the pool) once
    # there are this many of them; fewer get a server each, as Interlock renders (0: always a server each).
    # A server per host saves nginx a map, an `if` and a run-time upstream lookup on every request (8% of
    # its instructions, bench/stock_layouts.py) but costs ~27 KiB of memory per host per worker generation.
    shared_server_from: Annotated[int, int_in(0, 10_000_000)] = Field(100, alias="SharedServerFrom")
    # Not Interlock's: per-route requests, bytes and latency. nginx writes a compact, buffered second
    # access log that the agent counts (agent.sh); the operator fetches the counts over the channel.
    # Only where the agent runs (hitless delivery). Measured in bench/peers.py (metrics on vs off).
    traffic_metrics: StrictBool = Field(True, alias="TrafficMetrics")
    # Not Interlock's: the access log's format, Interlock's `main` (MainLogFormat) or one JSON object a
    # line (`escape=json`) with the request id, the route's key, the upstream and the timings.
    access_log_format: Literal["main", "json"] = Field("main", alias="AccessLogFormat")
    global_options: Annotated[Options, _options("GlobalOptions")] = Field((), alias="GlobalOptions")
    http_options: Annotated[Options, _options("HTTPOptions")] = Field((), alias="HTTPOptions")
    tcp_options: Annotated[Options, _options("TCPOptions")] = Field((), alias="TCPOptions")

    @model_validator(mode="before")
    @classmethod
    def _no_default_keepalive_with_http_1_0(cls, data: object) -> object:
        # Keep-alive is on by default, and HTTP/1.0 closes every upstream connection: an Interlock
        # config that asks for 1.0 keeps working, without keep-alive, unless it also asks for that.
        if isinstance(data, dict) and not {"UpstreamKeepalive", "upstream_keepalive"} & data.keys():
            version = data.get("HTTPVersion", data.get("http_version"))
            if version is not None and _version(version) != "1.1":
                return {**data, "UpstreamKeepalive": 0}
        return data

    @model_validator(mode="before")
    @classmethod
    def _trace_format_without_request_ids(cls, data: object) -> object:
        return log_formats.formats_without_request_ids(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _no_request_id_variable_without_request_ids(self) -> NginxOptions:
        error = None if self.request_ids else log_formats.request_id_error(
            {"MainLogFormat": self.main_log_format, "TraceLogFormat": self.trace_log_format})
        if error:
            raise ValueError(error)
        return self

    def access_log_buffer_bytes(self) -> int:
        """AccessLogBuffer in bytes (0: the access log is not buffered)."""
        return _bytes(self.access_log_buffer, units="k")

    def global_sets(self, directive: str) -> bool:
        """Whether a `GlobalOptions` entry is that directive (the template then leaves out its own)."""
        return any(entry.split(None, 1)[0].rstrip(";") == directive for entry in self.global_options if entry.strip())

    @model_validator(mode="after")
    def _one_worker_shutdown_timeout(self) -> NginxOptions:
        if "worker_shutdown_timeout" in self.model_fields_set and self.global_sets("worker_shutdown_timeout"):
            raise ValueError("WorkerShutdownTimeout and a worker_shutdown_timeout in GlobalOptions: keep one")
        return self

    @model_validator(mode="after")
    def _keepalive_needs_http_1_1(self) -> NginxOptions:
        if self.upstream_keepalive and self.http_version != "1.1":
            raise ValueError(f"UpstreamKeepalive needs HTTPVersion = \"1.1\" (HTTP {self.http_version} closes "
                             f"every upstream connection)")
        return self

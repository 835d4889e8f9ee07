"""Property: any value of any nginx option is either refused by the config model with one line, or the
default template rendered with it (over a representative route table) passes the real `nginx -t`.

Typed options must never get as far as nginx and fail there: the model alone decides. The raw lists
(`GlobalOptions`, `HTTPOptions`, `SSLOpts`) are nginx's own language, so for them the model checks
syntax only: an accepted entry is exactly one directive in the block it was meant for (crossplane,
a real nginx parser, reads the output), and `check-config`'s nginx stage then gives one line or OK.

Budgets: nginx -t costs ~20 ms a run on this machine's shared cores, so examples are limited.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import crossplane
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from swarmgate.errors import ConfigError
from swarmgate.models.settings.config import Config, parse_config
from swarmgate.operator.cli.offline import check_with_nginx
from swarmgate.renderers.nginx import render_nginx
from swarmgate.renderers.sample import sample_route_table
from swarmgate.renderers.validate import nginx_check

INFO = "swarmgate/0.1.0 linux/amd64"
# SWARMGATE_PROPERTY_EXAMPLES=3000 explores further (minutes); the suite's budget keeps it at seconds.
SCALE = int(os.environ.get("SWARMGATE_PROPERTY_EXAMPLES", "0")) or None
BUDGET = settings(max_examples=SCALE or 120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are TOML basic-string escapes
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


def document(extension: dict[str, Any], options: dict[str, Any]) -> str:
    lines = ["[Extensions.default]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in extension.items()]
    lines.append("[Extensions.default.Config]")
    lines += [f"{k} = {toml_value(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def one_line_or_config(text: str) -> Config | None:
    try:
        config = parse_config(text, source="fuzz.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.toml: "), str(exc)
        event("refused by the model: " + str(exc).split(":")[1].strip())
        return None
    event("accepted by the model")
    return config


garbage = st.one_of(st.text(max_size=8), st.booleans(), st.floats(), st.lists(st.integers(), max_size=2))


def integers(low: int, high: int, *edges: int) -> st.SearchStrategy[Any]:
    """Mostly values in the range nginx takes (the model must pass them), then edges and anything."""
    valid = st.integers(min_value=low, max_value=high)
    return st.one_of(valid, valid, st.sampled_from(edges), st.integers(), garbage)


def sizes(*edges: str) -> st.SearchStrategy[Any]:
    valid = st.from_regex(r"\A[1-9][0-9]{0,3}[km]?\Z")
    return st.one_of(valid, valid, st.sampled_from(edges), st.from_regex(r"\A[0-9]{1,13}[kKmMgGtb]?\Z"), garbage)


durations = st.one_of(st.sampled_from(["0", "0s", "1ms", "500ms", "75s", "1m30s", "24h", "9999999h", "0.0001s"]),
                      st.from_regex(r"\A[0-9]{1,9}(\.[0-9]{1,4})?(ns|us|ms|s|m|h)\Z"),
                      st.floats(allow_nan=True, allow_infinity=True), st.integers(), garbage)
paths = st.one_of(st.sampled_from(["/dev/stdout", "/dev/stderr", "/var/log/nginx/a.log", "off", "stderr",
                                   "/run/x.pid", "relative.log", "/a b", "/a;b", "/../etc", "syslog:server=x"]),
                  st.text(max_size=12))
variables = st.sampled_from(["$remote_addr", "$status", "$http_user_agent", "$swarmgate_request_id", "${host}",
                             "$upstream_addr", "$no_such_var", "$", "${", "$1", "$cookie_sid", "$http_"])
log_formats = st.one_of(
    st.lists(st.one_of(variables, st.sampled_from([" ", "-", '"', "'", "[", "]", "\\", "\n", "{", ";", "reqid="])),
             min_size=1, max_size=6).map("".join),
    st.text(max_size=12))
ciphers = st.one_of(st.sampled_from(["HIGH:!aNULL:!MD5", "ECDHE-RSA-AES256-GCM-SHA384", "DEFAULT", "foo",
                                     "TLS_AES_128_GCM_SHA256", "HIGH;", "ALL:!COMPLEMENTOFDEFAULT", ""]),
                    st.text(max_size=10))
protocols = st.one_of(st.lists(st.sampled_from(["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", "SSLv3", "TLSv9",
                                                "tls"]), max_size=3).map(" ".join), st.text(max_size=6))

OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "User": st.one_of(st.sampled_from(["nginx", "www-data", "root", "a b", "9x", "n;x", "nginx nginx"]),
                      st.text(max_size=8)),
    "PidPath": paths,
    "WorkerProcesses": st.one_of(st.sampled_from(["auto", "0", "1", "1024", "1025", "auto;", "01"]),
                                 integers(1, 1024, 0, 1025)),
    "RlimitNoFile": integers(64, 1_048_576, 0, 63, 1_048_577, 2**40),
    "MaxConnections": integers(16, 1_048_576, 0, 1, 15, 1_048_577, 99999999999999999999),
    "ConnectTimeout": integers(1, 2_147_483, 0, 2_147_484, 2**40),
    "SendTimeout": integers(1, 2_147_483, 0, 2**63),
    "ReadTimeout": integers(1, 2_147_483, 0),
    "KeepaliveTimeout": durations,
    "ClientBodyTimeout": durations,
    "ClientMaxBodySize": sizes("0", "1m", "1024g", "1025g", "8000000g", "1t"),
    "ClientBodyBufferSize": sizes("0", "1", "8k", "64m", "65m", "1g"),
    "ClientHeaderBufferSize": sizes("0", "1", "1k", "64m", "1g"),
    "LargeClientHeaderBuffers": st.one_of(st.sampled_from(["4 8k", "0 8k", "4 511", "4 512", "4 64m", "4 8g",
                                                           "4097 8k", "4  8k", "4"]),
                                          st.from_regex(r"\A[0-9]{1,6} {1,2}[0-9]{1,10}[kKmMgG]?\Z"), garbage),
    "ServerNamesHashBucketSize": integers(1, 32768, 0, 32769, 2**30),
    "UpstreamZoneSize": integers(32, 8192, 0, 31, 8193, 2**30),
    "SSLCiphers": ciphers,
    "SSLProtocols": protocols,
    "SSLDefaultDHParamPath": paths,
    "AccessLogPath": paths,
    "AccessLogBuffer": sizes("0", "1", "4k", "4096", "4097", "5k", "1m"),
    "AccessLogFlush": durations,
    "ErrorLogPath": paths,
    "MainLogFormat": log_formats,
    "TraceLogFormat": log_formats,
    "HTTPVersion": st.one_of(st.sampled_from(["1.0", "1.1", 1.1, 1.0, "2", 2]), garbage),
    "UnderscoresInHeaders": st.one_of(st.booleans(), garbage),
    "HideInfoHeaders": st.one_of(st.booleans(), garbage),
    "RequestIDs": st.one_of(st.booleans(), garbage),
    "IPHash": st.one_of(st.booleans(), garbage),
}
EXTENSION: dict[str, st.SearchStrategy[Any]] = {
    "TargetPort": integers(1, 65535, 0, 65536),
    "TargetSSLPort": integers(1, 65535, 0, 65536),
    "ServiceCluster": st.one_of(st.sampled_from(["", "east", "a b", "x;y", "a" * 129]), st.text(max_size=6)),
    "PublishMode": st.sampled_from(["host", "ingress", "both"]),
}


def some_of(fields: dict[str, st.SearchStrategy[Any]], most: int) -> st.SearchStrategy[dict[str, Any]]:
    """A few keys at a time: with many, almost every document has one bad value and nothing reaches nginx."""
    return st.lists(st.sampled_from(sorted(fields)), max_size=most, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys}))


@BUDGET
@given(extension=some_of(EXTENSION, 1), options=some_of(OPTIONS, 3))
def test_typed_options_are_refused_in_one_line_or_render_a_config_nginx_accepts(
    extension: dict[str, Any], options: dict[str, Any]
) -> None:
    config = one_line_or_config(document(extension, options))
    if config is None:
        return
    ext = config.extensions["default"]
    nginx_check(render_nginx(ext, sample_route_table(ext.service_cluster), server_info=INFO).text)


# Pieces of nginx syntax to splice into otherwise plausible raw entries.
FRAGMENTS = [";", "{", "}", "'", '"', "\\", "#", " ", "$host", "include /etc/passwd", "\n", "\x00", "é", "a b"]
PLAUSIBLE = {
    "GlobalOptions": ["worker_shutdown_timeout 10s", "worker_priority 0;", "pcre_jit on", "env TZ;",
                      "worker_processes 2", "events { }", "timer_resolution 100ms", "bogus_directive on"],
    "HTTPOptions": ["gzip on;", "gzip_types text/plain", "add_header X-Frame-Options \"DENY\" always",
                    "map $http_x $y { default 1; }", "keepalive_timeout 5s", "resolver 127.0.0.1",
                    "limit_req_zone $binary_remote_addr zone=one:10m rate=1r/s", "server_tokens on"],
    "SSLOpts": ["ssl_session_cache shared:SSL:10m", "ssl_session_timeout 10m;", "ssl_prefer_server_ciphers on",
                "ssl_stapling off", "ssl_trusted_certificate /etc/ca.pem", "gzip on", "ssl_protocols TLSv1.3"],
}


def raw_entry(key: str) -> st.SearchStrategy[str]:
    plausible = st.sampled_from(PLAUSIBLE[key])
    spliced = st.lists(st.one_of(plausible, st.sampled_from(FRAGMENTS), st.text(max_size=3)), min_size=1,
                       max_size=3).map("".join)
    return st.one_of(plausible, spliced)


raw_lists = st.fixed_dictionaries({}, optional={key: st.lists(raw_entry(key), min_size=1, max_size=3)
                                                for key in PLAUSIBLE})


def directives(text: str) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(text)
        payload = crossplane.parse(str(conf), single=True, check_ctx=False, check_args=False, comments=False)
    assert payload["status"] == "ok", payload["errors"]
    return list(payload["config"][0]["parsed"])


def names_in(parsed: list[dict[str, Any]], key: str) -> list[list[str]]:
    """The directive names at each place a list's entries go: main, http, and every TLS server."""
    http = next(d["block"] for d in parsed if d["directive"] == "http")
    if key == "GlobalOptions":
        return [[d["directive"] for d in parsed]]
    if key == "HTTPOptions":
        return [[d["directive"] for d in http]]
    servers = [d["block"] for d in http if d["directive"] == "server"
               and any(x["directive"] == "ssl_protocols" for x in d["block"])]
    return [[d["directive"] for d in s] for s in servers]


@settings(max_examples=SCALE or 200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lists=raw_lists)
def test_raw_entries_are_refused_in_one_line_or_become_exactly_the_directives_they_are(
    lists: dict[str, list[str]]
) -> None:
    config = one_line_or_config(document({}, lists))
    if config is None:
        return
    ext = config.extensions["default"]
    table = sample_route_table()
    parsed = directives(render_nginx(ext, table, server_info=INFO).text)
    # A `worker_shutdown_timeout` entry takes the place of the template's own (WorkerShutdownTimeout).
    replaced = 0.0 if ext.config.global_sets("worker_shutdown_timeout") else ext.config.worker_shutdown_timeout
    plain = directives(render_nginx(ext.model_copy(update={"config": ext.config.model_copy(update={
        "global_options": (), "http_options": (), "ssl_opts": (), "worker_shutdown_timeout": replaced})}),
        table, server_info=INFO).text)
    fields = {"GlobalOptions": ext.config.global_options, "HTTPOptions": ext.config.http_options,
              "SSLOpts": ext.config.ssl_opts}
    for key, entries in fields.items():
        added = [e.split()[0].rstrip(";{") for e in entries]
        for with_entries, without in zip(names_in(parsed, key), names_in(plain, key), strict=True):
            extra = list(with_entries)
            for name in without:
                extra.remove(name)
            assert sorted(extra) == sorted(added), (key, entries)


@settings(max_examples=SCALE or 40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lists=raw_lists)
def test_check_config_ends_raw_entries_in_one_line_or_in_a_config_nginx_accepts(lists: dict[str, list[str]]) -> None:
    config = one_line_or_config(document({}, lists))
    if config is None:
        return
    try:
        check_with_nginx(config, source="fuzz.toml")
    except ConfigError as exc:
        assert "\n" not in str(exc) and "nginx -t rejects" in str(exc)
        return
    ext = config.extensions["default"]
    nginx_check(render_nginx(ext, sample_route_table(), server_info=INFO).text)


@settings(max_examples=SCALE or 200, deadline=None)
@given(poll=durations, endpoint=st.one_of(st.sampled_from(["10.0.0.1:9090", "http://op.local:8080", "https://[::1]:1",
                                                           "not a url at all", "x:0", "x:65536", "http://x", ":80"]),
                                          st.text(max_size=12)))
def test_poll_interval_and_endpoint_override_are_refused_or_sane(poll: Any, endpoint: str) -> None:
    config = one_line_or_config(f"PollInterval = {toml_value(poll)}\nEndpointOverride = {toml_value(endpoint)}\n"
                                "[Extensions.default]\n")
    if config is not None:
        assert 1.0 <= config.poll_interval <= 3600.0
        assert config.endpoint_override is not None and ":" in config.endpoint_override
        assert " " not in config.endpoint_override

"""Loading Interlock's TOML: the seed verbatim, every key, and one-line errors for bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarmgate.errors import ConfigError
from swarmgate.models.settings.config import Config, load_config, parse_config
from swarmgate.models.settings.duration import parse_go_duration
from swarmgate.models.settings.extension import LOADBALANCER_CONSTRAINT, Extension
from swarmgate.models.settings.log_formats import DEFAULT_MAIN_LOG_FORMAT, DEFAULT_TRACE_LOG_FORMAT
from swarmgate.models.settings.nginx_options import NginxOptions
from swarmgate.models.settings.user_file import MAX_USER_FILE_BYTES
from swarmgate.operator.cli.offline import cmd_check_config

GOLDEN = Path(__file__).parent.parent / "golden"


def test_seed_config_loads_verbatim_with_interlock_defaults_for_what_it_leaves_out() -> None:
    config = load_config(GOLDEN / "seed-config.toml")
    expected = Config(
        listen_addr=":8080",
        docker_url="unix:///var/run/docker.sock",
        poll_interval=3.0,
        extensions={
            "default": Extension(
                name="default",
                image="interlockpreview/interlock-extension-nginx:2.0.0-preview",
                args=(),
                service_name="interlock-ext",
                proxy_image="nginx:alpine",
                proxy_args=(),
                proxy_service_name="interlock-proxy",
                proxy_config_path="/etc/nginx/nginx.conf",
                publish_mode="host",
                published_port=80,
                target_port=80,
                published_ssl_port=443,
                target_ssl_port=443,
                config=NginxOptions(
                    user="nginx", pid_path="/var/run/proxy.pid", worker_processes="1",
                    rlimit_nofile=65535, max_connections=2048,
                ),
            )
        },
    )
    assert config.model_dump(exclude={"notices"}) == expected.model_dump(exclude={"notices"})
    ext = config.extensions["default"]
    assert ext.proxy_constraints == (LOADBALANCER_CONSTRAINT,)
    assert (ext.proxy_replicas, ext.proxy_stop_signal, ext.proxy_stop_grace_period) == (2, "SIGQUIT", 5.0)
    assert ext.hitless_service_update is True
    assert config.listen_port == 8080
    assert config.notices == (
        "Extensions.default.Args: not needed by swarmgate (no separate extension service); ignored",
        "Extensions.default.Image: not needed by swarmgate (no separate extension service); ignored",
        "Extensions.default.ServiceName: not needed by swarmgate (no separate extension service); ignored",
    )


def test_every_interlock_key_is_read_into_its_typed_field() -> None:
    config = load_config(GOLDEN / "every-key.toml")
    ext = config.extensions["east"]
    assert config.model_dump(exclude={"extensions", "notices"}) == {
        "listen_addr": "0.0.0.0:9090", "docker_url": "tcp://10.0.0.1:2376", "tls_ca_cert": "/certs/ca.pem",
        "tls_cert": "/certs/cert.pem", "tls_key": "/certs/key.pem", "allow_insecure": True,
        "poll_interval": 90.0, "endpoint_override": "10.0.0.1:9090", "control_sources": (),
        "acme_directory": None, "acme_email": None, "acme_ca_bundle": None,
        "acme_max_hosts_per_service": 20, "acme_orders_per_hour": 50,
        "status_page": True, "status_page_addr": None, "grafana_dashboard_url": None,
    }
    assert config.listen_port == 9090
    assert ext.model_dump(exclude={"config"}) == {
        "name": "east", "image": "interlock-extension-nginx:3", "args": ("-D",),
        "service_name": "interlock-ext-east", "labels": {"team": "edge"}, "container_labels": {"team": "edge"},
        "constraints": ("node.role==manager",), "placement_preferences": ("spread=node.labels.zone",),
        "config_image": "interlock-config:3", "config_service_name": "interlock-config-east",
        "networks": ("eastnet",), "proxy_image": "nginx:1.25-alpine", "proxy_args": ("-g", "daemon off;"),
        "proxy_service_name": "proxy-east", "proxy_config_path": "/etc/nginx/east.conf",
        "proxy_labels": {"role": "proxy"}, "proxy_container_labels": {"role": "proxy-task"},
        "proxy_replicas": 3, "proxy_stop_signal": "SIGTERM", "proxy_stop_grace_period": 10.0,
        "proxy_constraints": ("node.labels.region==east",),
        "proxy_placement_preferences": ("spread=node.labels.rack",), "proxy_update_delay": 0.5,
        "service_cluster": "east", "publish_mode": "host", "published_port": 8080, "target_port": 8081,
        "published_ssl_port": 8443, "target_ssl_port": 8444, "template": "east-template",
        "hitless_service_update": False,
        "http2": False,
    }
    assert ext.config.model_dump() == {
        "user": "www-data", "pid_path": "/run/nginx-east.pid", "worker_processes": "auto",
        "rlimit_nofile": 4096, "max_connections": 512, "connect_timeout": 5, "send_timeout": 30,
        "read_timeout": 45, "keepalive_timeout": 30.0, "client_max_body_size": "10m",
        "client_body_buffer_size": "16k", "client_header_buffer_size": "2k",
        "large_client_header_buffers": "8 16k", "client_body_timeout": 20.0, "underscores_in_headers": True,
        "server_names_hash_bucket_size": 256, "upstream_zone_size": 128, "ip_hash": True,
        "ssl_ciphers": "ECDHE-RSA-AES256-GCM-SHA384", "ssl_protocols": "TLSv1.2 TLSv1.3",
        "ssl_opts": ("ssl_session_cache shared:SSL:10m;",), "ssl_default_dh_param": 2048,
        "ssl_default_dh_param_path": "/etc/nginx/dhparam.pem", "ssl_verify": "optional",
        "hide_info_headers": True, "request_ids": False, "access_log_path": "/var/log/nginx/access.log",
        "access_log_buffer": "4k", "access_log_flush": 1.0,
        "error_log_path": "/var/log/nginx/error.log", "main_log_format": "$remote_addr $status",
        "trace_log_format": "$remote_addr $request_id", "http_version": "1.0",
        # swarmgate's own keys, not set here: keep-alive is off where HTTPVersion = "1.0" says so
        "upstream_keepalive": 0, "upstream_keepalive_timeout": 1.5, "worker_shutdown_timeout": 240.0,
        "lua_balancer": False, "shared_server_from": 100, "traffic_metrics": False, "access_log_format": "json",
        "global_options": ("worker_shutdown_timeout 10s;",), "http_options": ("gzip on;",),
        "tcp_options": (),
    }
    # nine extension-service keys, Networks, SSLDefaultDHParam, SSLVerify, TCPOptions
    assert len(config.notices) == 13


def test_nginx_options_default_to_interlocks_documented_values() -> None:
    assert NginxOptions().model_dump() == {
        "user": "nginx", "pid_path": "/var/run/proxy.pid", "worker_processes": "1", "rlimit_nofile": 65535,
        "max_connections": 1024, "connect_timeout": 600, "send_timeout": 600, "read_timeout": 600,
        "keepalive_timeout": 75.0, "client_max_body_size": "1m", "client_body_buffer_size": "8k",
        "client_header_buffer_size": "1k", "large_client_header_buffers": "4 8k", "client_body_timeout": 60.0,
        "underscores_in_headers": False, "server_names_hash_bucket_size": 128, "upstream_zone_size": 64,
        "ip_hash": False, "ssl_ciphers": "HIGH:!aNULL:!MD5", "ssl_protocols": "TLSv1.2", "ssl_opts": (),
        "ssl_default_dh_param": 1024, "ssl_default_dh_param_path": "", "ssl_verify": "required",
        "hide_info_headers": False, "request_ids": True, "access_log_path": "/dev/stdout",
        "error_log_path": "/dev/stdout",
        # swarmgate's own: the access log written in PIPE_BUF chunks, at least every second
        "access_log_buffer": "4k", "access_log_flush": 1.0,
        "main_log_format": DEFAULT_MAIN_LOG_FORMAT, "trace_log_format": DEFAULT_TRACE_LOG_FORMAT,
        "http_version": "1.1", "global_options": (), "http_options": (), "tcp_options": (),
        # swarmgate's own: upstream keep-alive, idle for less than the common backends' own timeouts
        "upstream_keepalive": 16, "upstream_keepalive_timeout": 1.5, "worker_shutdown_timeout": 240.0,
        "lua_balancer": False, "shared_server_from": 100, "traffic_metrics": True, "access_log_format": "main",
    }


@pytest.mark.parametrize("key", ["RlimitNoFile", "RLimitNoFile"])
def test_both_spellings_of_rlimit_nofile_are_accepted(key: str) -> None:
    config = parse_config(f"[Extensions.default.Config]\n{key} = 4096\n", source="c.toml")
    assert config.extensions["default"].config.rlimit_nofile == 4096


@pytest.mark.parametrize(
    ("toml", "mode", "constraints"),
    [
        pytest.param('PublishMode = "host"', "host", (LOADBALANCER_CONSTRAINT,), id="host-pins-to-lb-nodes"),
        pytest.param('PublishMode = "ingress"', "ingress", (), id="ingress-has-no-default"),
        pytest.param('PublishMode = "host"\nProxyConstraints = []', "host", (), id="explicit-empty-wins"),
        pytest.param('PublishMode = "host"\nProxyConstraints = ["node.role==worker"]', "host",
                     ("node.role==worker",), id="explicit-list-wins"),
    ],
)
def test_proxy_constraints_default_to_load_balancer_nodes_in_host_mode(
    toml: str, mode: str, constraints: tuple[str, ...]
) -> None:
    ext = parse_config(f"[Extensions.default]\n{toml}\n", source="c.toml").extensions["default"]
    assert (ext.publish_mode, ext.proxy_constraints) == (mode, constraints)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3.0), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5), ("0", 0.0), ("250us", 0.00025)],
)
def test_go_durations_become_seconds(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


BAD_FILES = [
    pytest.param('[Extensions.default]\nPublishedPort = "eighty"',
                 "Extensions.default.PublishedPort: expected an integer 1-65535, got 'eighty'", id="port-word"),
    pytest.param("[Extensions.default]\nPublishedPort = 70000",
                 "Extensions.default.PublishedPort: expected an integer 1-65535, got 70000", id="port-range"),
    pytest.param("[Extensions.default]\nPublishedPort = true",
                 "Extensions.default.PublishedPort: expected an integer 1-65535, got True", id="port-bool"),
    pytest.param('[Extensions.default]\nProxyImagee = "nginx"',
                 "Extensions.default.ProxyImagee: unknown key (did you mean 'ProxyImage'?)", id="typo-extension"),
    pytest.param('ListenAdr = ":8080"\n[Extensions.default]',
                 "ListenAdr: unknown key (did you mean 'ListenAddr'?)", id="typo-core"),
    pytest.param("[Extensions.default.Config]\nMaxConection = 5",
                 "Extensions.default.Config.MaxConection: unknown key (did you mean 'MaxConnections'?)",
                 id="typo-nginx"),
    pytest.param('PollInterval = "3x"\n[Extensions.default]',
                 "PollInterval: expected a duration such as '3s', '500ms' or '1m30s', got '3x'", id="duration"),
    pytest.param('[Extensions.default]\nPublishMode = "hots"',
                 "Extensions.default.PublishMode: expected one of 'ingress' or 'host', got 'hots'", id="mode"),
    pytest.param("[Extensions.default]\nArgs = [1]",
                 "Extensions.default.Args[0]: expected a string, got 1", id="list-item"),
    pytest.param("[Extensions.default]\nHitlessServiceUpdate = \"yes\"",
                 "Extensions.default.HitlessServiceUpdate: expected true or false, got 'yes'", id="bool"),
    pytest.param("[Extensions.default]\nTargetSSLPort = 80",
                 "Extensions.default: TargetPort and TargetSSLPort must differ, both are 80", id="same-ports"),
    pytest.param('[Extensions.default.Config]\nUser = "nginx; daemon off"',
                 "Extensions.default.Config.User: expected a user name such as 'nginx' or 'www-data', "
                 "got 'nginx; daemon off'", id="option-injection"),
    pytest.param('[Extensions.default.Config]\nClientMaxBodySize = "lots"',
                 "Extensions.default.Config.ClientMaxBodySize: expected an nginx size such as '1m' or '1g', "
                 "got 'lots'", id="size"),
    pytest.param('ListenAddr = "everywhere"\n[Extensions.default]',
                 "ListenAddr: expected an address such as ':8080' or '0.0.0.0:8080', got 'everywhere'",
                 id="listen-addr"),
    pytest.param('ListenAddr = ":8080"', "Extensions: required key is missing", id="no-extensions"),
    pytest.param("[Extensions]", "Extensions: at least one [Extensions.NAME] table is required",
                 id="empty-extensions"),
    pytest.param('[Extensions.default]\nPublishedPort = 80\nPublishedPort = 81', "invalid TOML: ",
                 id="toml-duplicate-key"),
    pytest.param('[Extensions.default]\nPublishedPort = ', "invalid TOML: ", id="toml-syntax"),
    pytest.param('[Extensions."bad name"]', "Extensions.bad name: expected a name of letters", id="bad-name"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="bad.toml")
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"bad.toml: {message}")


def test_toml_syntax_errors_say_the_line() -> None:
    with pytest.raises(ConfigError, match=r"line 3"):
        parse_config('ListenAddr = ":8080"\n[Extensions.default]\nPublishedPort = \n', source="bad.toml")


def test_check_config_exits_0_and_lists_notices(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_check_config(str(GOLDEN / "seed-config.toml")) == 0
    out, err = capsys.readouterr()
    assert "OK (1 extension(s))" in out
    assert "notice: Extensions.default.Image: not needed by swarmgate" in out
    assert err == ""


@pytest.mark.parametrize(("text", "message"), BAD_FILES[:4])
def test_check_config_exits_2_with_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    assert cmd_check_config(str(path)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"swarmgate: {path}: {message}\n"


def test_check_config_of_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_check_config(str(tmp_path / "nope.toml")) == 2
    assert capsys.readouterr().err == f"swarmgate: {tmp_path / 'nope.toml'}: cannot read: No such file or directory\n"


MORE_BAD = [
    pytest.param("[Extensions.default.Config]\nMaxConnections = 99999999999999999999",
                 "Extensions.default.Config.MaxConnections: expected an integer 16-1048576, got 99999999999999999999",
                 id="max-connections-beyond-nginx"),
    pytest.param("[Extensions.default.Config]\nWorkerProcesses = 100000",
                 "Extensions.default.Config.WorkerProcesses: expected an integer 1-1024 or 'auto'", id="workers"),
    pytest.param('PollInterval = "0s"\n[Extensions.default]',
                 "PollInterval: expected a duration from 1s to 1h, got '0s'", id="poll-busy-loop"),
    pytest.param("PollInterval = inf\n[Extensions.default]",
                 "PollInterval: expected a non-negative duration, got inf", id="poll-infinite"),
    pytest.param('[Extensions.default]\nProxyImage = "nginx\\u0000:alpine"',
                 "Extensions.default.ProxyImage: control character U+0000 is not allowed in a value", id="nul-image"),
    pytest.param('[Extensions.default]\nProxyImage = "Nginx:alpine"',
                 "Extensions.default.ProxyImage: expected an image reference", id="image-uppercase"),
    pytest.param('EndpointOverride = "not a url at all"\n[Extensions.default]',
                 "EndpointOverride: expected 'host:port' or 'http://host:port'", id="endpoint-not-a-url"),
    pytest.param('[Extensions.a]\n[Extensions.b]',
                 "Extensions.b.ProxyServiceName: 'interlock-proxy' is also the proxy service of extension 'a'",
                 id="one-proxy-two-extensions"),
    pytest.param('[Extensions.a]\nProxyServiceName = "pa"\n[Extensions.b]\nProxyServiceName = "pb"\n'
                 "PublishedPort = 8080\nPublishedSSLPort = 80",
                 "Extensions.b.PublishedSSLPort: port 80 is also published by extension 'a' on the same nodes",
                 id="ports-collide"),
    pytest.param('[Extensions.default]\nProxyStopSignal = "SIGNOPE"',
                 "Extensions.default.ProxyStopSignal: expected a signal", id="signal"),
    pytest.param('[Extensions.default]\nProxyConstraints = ["node.labels.x"]',
                 "Extensions.default.ProxyConstraints[0]: expected a placement constraint", id="constraint"),
    pytest.param('[Extensions.default]\nServiceCluster = "a b"',
                 "Extensions.default.ServiceCluster: expected a service cluster name", id="cluster"),
    pytest.param('[Extensions.default.Config]\nHTTPOptions = ["gzip on; server_tokens on"]',
                 "Extensions.default.Config.HTTPOptions: entry 1 'gzip on; server_tokens on': one directive per "
                 "entry", id="two-directives"),
    pytest.param('[Extensions.default.Config]\nHTTPOptions = ["gzip \\"on"]',
                 "Extensions.default.Config.HTTPOptions: entry 1 'gzip \"on': unbalanced \" quote", id="quote"),
    pytest.param('[Extensions.default.Config]\nHTTPOptions = ["}"]',
                 "Extensions.default.Config.HTTPOptions: entry 1 '}': a '}' closes a block the entry did not open",
                 id="close-brace"),
    pytest.param('[Extensions.default.Config]\nHTTPOptions = ["map $a $b { default 1;"]',
                 "Extensions.default.Config.HTTPOptions: entry 1 'map $a $b { default 1;': the block of 'map' is not "
                 "closed", id="open-block"),
    pytest.param('[Extensions.default.Config]\nHTTPOptions = ["gzip on # off"]',
                 "Extensions.default.Config.HTTPOptions: entry 1 'gzip on # off': a '#' outside quotes", id="comment"),
    pytest.param('[Extensions.default.Config]\nGlobalOptions = ["include /etc/nginx/extra.conf"]',
                 "Extensions.default.Config.GlobalOptions: entry 1 'include /etc/nginx/extra.conf': 'include' reads "
                 "a file that exists only inside the proxy", id="include"),
    pytest.param('[Extensions.default.Config]\nGlobalOptions = ["worker_processes 4"]',
                 "Extensions.default.Config.GlobalOptions: entry 1 'worker_processes 4': 'worker_processes' is "
                 "already set by swarmgate's template here", id="duplicate-of-template"),
    pytest.param('[Extensions.default.Config]\nSSLOpts = "gzip on"',
                 "Extensions.default.Config.SSLOpts: entry 1 'gzip on': SSLOpts holds ssl_* directives", id="ssl-opts"),
    pytest.param('[Extensions.default.Config]\nSSLCiphers = "NO-SUCH-CIPHER"',
                 "Extensions.default.Config.SSLCiphers: expected an OpenSSL cipher list that names at least one",
                 id="ciphers"),
    pytest.param('[Extensions.default.Config]\nMainLogFormat = "$remote_addr $no_such"',
                 "Extensions.default.Config.MainLogFormat: unknown nginx variable $no_such", id="log-variable"),
    pytest.param('[Extensions.default.Config]\nRequestIDs = "off"',
                 "Extensions.default.Config.RequestIDs: expected true or false, got 'off'", id="request-ids-word"),
    pytest.param('[Extensions.default.Config]\nRequestIDs = false\nTraceLogFormat = "$swarmgate_request_id"',
                 "Extensions.default.Config: TraceLogFormat names $swarmgate_request_id, which RequestIDs = false "
                 "leaves out: use $http_x_request_id", id="request-id-variable-without-request-ids"),
    pytest.param('[Extensions.default.Config]\nUpstreamZoneSize = 8',
                 "Extensions.default.Config.UpstreamZoneSize: expected an integer 32-8192, got 8", id="zone-too-small"),
    pytest.param('[Extensions.default.Config]\nLargeClientHeaderBuffers = "4 256"',
                 "Extensions.default.Config.LargeClientHeaderBuffers: expected a number 1-4096 and a size 512-64m",
                 id="buffers-below-pool-size"),
    pytest.param("a = " + "[" * 5000 + "]" * 5000, "invalid TOML: nested too deeply", id="deep-nesting"),
]


@pytest.mark.parametrize(("text", "message"), MORE_BAD)
def test_what_nginx_or_swarm_would_refuse_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="bad.toml")
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"bad.toml: {message}"), line


def test_two_host_mode_extensions_may_share_ports_on_different_nodes() -> None:
    config = parse_config('[Extensions.a]\nProxyServiceName = "pa"\nPublishMode = "host"\n'
                          'ProxyConstraints = ["node.labels.lb==a"]\n[Extensions.b]\nProxyServiceName = "pb"\n'
                          'PublishMode = "host"\nProxyConstraints = ["node.labels.lb==b"]\n', source="c.toml")
    assert sorted(config.extensions) == ["a", "b"]


def run_check_config(path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "swarmgate", "check-config", str(path)], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero", "dev-urandom", "too-big", "not-utf8", "deep"])
def test_check_config_of_any_file_ends_at_once_with_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    path: Path | str = tmp_path / "config.toml"
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: an open() that blocks would hang here (the 30 s timeout fails it)
    elif kind == "directory":
        Path(path).mkdir()
    elif kind == "dev-zero":
        path = "/dev/zero"
    elif kind == "dev-urandom":
        path = "/dev/urandom"
    elif kind == "too-big":
        with open(path, "wb") as f:
            f.truncate(MAX_USER_FILE_BYTES + 1)  # sparse: refused by its size before a byte is read
    elif kind == "not-utf8":
        Path(path).write_bytes(b'ListenAddr = "\xff"\n')
    else:
        Path(path).write_text("[Extensions.default]\nArgs = " + "[" * 100_000 + "]" * 100_000 + "\n")
    result = run_check_config(path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"swarmgate: {path}: "), result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_runs_nginx_t_on_what_the_raw_options_render_to(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[Extensions.default.Config]\nHTTPOptions = ["gzip_comp_level 99"]\n')
    result = run_check_config(path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"swarmgate: {path}: Extensions.default.Config: nginx -t rejects the config "
                                    'these options render to: value must be between 1 and 9')
    assert result.stderr.count("\n") == 1


def test_upstream_keepalive_is_refused_with_http_1_0_and_read_with_its_timeout() -> None:
    with pytest.raises(ConfigError, match=r'UpstreamKeepalive needs HTTPVersion = "1.1"'):
        parse_config('[Extensions.default.Config]\nUpstreamKeepalive = 16\nHTTPVersion = "1.0"\n', source="c.toml")
    # On by default, but an Interlock config that asks for HTTP/1.0 still loads, without keep-alive.
    for version in ('"1.0"', "1.0"):
        options = parse_config(f"[Extensions.default.Config]\nHTTPVersion = {version}\n",
                               source="c.toml").extensions["default"].config
        assert (options.http_version, options.upstream_keepalive) == ("1.0", 0)
    options = parse_config('[Extensions.default.Config]\nUpstreamKeepalive = 16\nUpstreamKeepaliveTimeout = "2s"\n',
                           source="c.toml").extensions["default"].config
    assert (options.upstream_keepalive, options.upstream_keepalive_timeout) == (16, 2.0)


def test_worker_shutdown_timeout_is_240s_unless_global_options_set_it_and_both_is_an_error() -> None:
    assert NginxOptions().worker_shutdown_timeout == 240.0
    options = parse_config('[Extensions.default.Config]\nGlobalOptions = ["worker_shutdown_timeout 10s;"]\n',
                           source="c.toml").extensions["default"].config
    assert options.global_sets("worker_shutdown_timeout") and not options.global_sets("worker_processes")
    with pytest.raises(ConfigError, match="WorkerShutdownTimeout and a worker_shutdown_timeout in GlobalOptions"):
        parse_config('[Extensions.default.Config]\nWorkerShutdownTimeout = "30s"\n'
                     'GlobalOptions = ["worker_shutdown_timeout 10s;"]\n', source="c.toml")


def test_control_sources_are_normalized_networks_and_a_bad_one_is_one_line_with_its_key() -> None:
    base = '[Extensions.default]\n  ProxyServiceName = "p"\n'
    config = parse_config('ControlSources = ["198.18.0.1", "10.0.0.0/8", "fd00::1"]\n' + base, source="t.toml")
    assert config.control_sources == ("198.18.0.1/32", "10.0.0.0/8", "fd00::1/128")
    with pytest.raises(ConfigError, match=r"^t\.toml: ControlSources\[1\]: expected an IP address or network "
                                          r"such as '10\.0\.0\.5' or '10\.0\.0\.0/24', got 'lb-00'$"):
        parse_config('ControlSources = ["10.0.0.1", "lb-00"]\n' + base, source="t.toml")



def test_acme_keys_are_read_typed_and_a_bad_one_is_one_line_with_its_key() -> None:
    base = '[Extensions.default]\nPublishedPort = 80\nPublishedSSLPort = 443\n'
    config = parse_config('ACMEDirectory = "https://198.18.0.1:14000/dir"\nACMEEmail = "ops@example.com"\n'
                          'ACMECABundle = "/etc/swarmgate/acme-ca.pem"\n' + base, source="t.toml")
    assert (config.acme_directory, config.acme_email, config.acme_ca_bundle) == (
        "https://198.18.0.1:14000/dir", "ops@example.com", "/etc/swarmgate/acme-ca.pem")
    assert parse_config(base, source="t.toml").acme_directory is None
    with pytest.raises(ConfigError, match=r"^t\.toml: ACMEDirectory: .*https URL"):
        parse_config('ACMEDirectory = "http://ca.example/dir"\n' + base, source="t.toml")
    with pytest.raises(ConfigError, match=r"^t\.toml: ACMEEmail: "):
        parse_config('ACMEEmail = "ops"\n' + base, source="t.toml")
    with pytest.raises(ConfigError, match=r"^t\.toml: ACMECABundle: "):
        parse_config('ACMECABundle = "relative.pem"\n' + base, source="t.toml")
    limits = parse_config('ACMEMaxHostsPerService = 3\nACMEOrdersPerHour = 5\n' + base, source="t.toml")
    assert (limits.acme_max_hosts_per_service, limits.acme_orders_per_hour) == (3, 5)
    with pytest.raises(ConfigError, match=r"^t\.toml: ACMEMaxHostsPerService: expected an integer 1-100, got 0"):
        parse_config('ACMEMaxHostsPerService = 0\n' + base, source="t.toml")
    with pytest.raises(ConfigError, match=r"^t\.toml: ACMEOrdersPerHour: expected an integer 1-1000, got '9'"):
        parse_config('ACMEOrdersPerHour = "9"\n' + base, source="t.toml")

"""The offline commands: `render` and `routes` from a config and a state file of Engine API JSON."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.operator.cli.main import main
from swarmgate.operator.cli.offline import cmd_render, cmd_routes, format_route_table
from tests.factories import node, service, task
from tests.unit.test_render import SEED, features_state

GOLDEN = Path(__file__).parent.parent / "golden"
REPO = Path(__file__).parent.parent.parent
SEED_CONFIG = str(GOLDEN / "seed-config.toml")
SEED_STATE = str(GOLDEN / "api" / "seed-demo-state.json")


def test_render_prints_the_seed_demo_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_render(SEED_CONFIG, SEED_STATE, None) == 0
    out, err = capsys.readouterr()
    assert out == (GOLDEN / "seed-demo.conf").read_text()
    assert err == ""


def test_render_of_an_unknown_extension_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_render(SEED_CONFIG, SEED_STATE, "east") == 2
    assert capsys.readouterr().err == "swarmgate: no extension named 'east' (the config has: default)\n"


def test_render_with_a_malformed_state_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"services": [], "tasks": []}')
    assert cmd_render(SEED_CONFIG, str(state), None) == 2
    assert capsys.readouterr().err == f"swarmgate: {state}: nodes: required key is missing\n"


def test_routes_prints_hosts_upstreams_and_set_aside_services_with_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = service("demo", {"com.docker.lb.hosts": "demo.local", "com.docker.lb.port": "8080"})
    broken = service("broken", {"com.docker.lb.hosts": "b.local", "com.docker.lb.port": "eighty"})
    idle = service("idle", {"com.docker.lb.hosts": "idle.local", "com.docker.lb.port": "8080"})
    t0 = task(demo, "wrk-0", ports={8080: 30000}, id="task0aaaaaaaaaaaaaaaaaaaa")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": [demo, broken, idle], "tasks": [t0],
                                 "nodes": [node("wrk-0", "10.0.0.10")]}))
    assert cmd_routes(SEED_CONFIG, str(state)) == 0
    assert capsys.readouterr().out == (
        "extension default (service cluster (none); listens on 80/443)\n"
        "  demo.local\n"
        "    / → demo\n"
        "      10.0.0.10:30000  demo task task0aaaaaaa on wrk-0\n"
        "  idle.local\n"
        "    / → idle\n"
        "      (no running task: 503)\n"
        "  set aside:\n"
        "    broken: label com.docker.lb.port: expected an integer 1-65535, got 'eighty'\n"
    )


def test_routes_shows_the_https_settings_of_each_host_and_pool() -> None:
    text = format_route_table(SEED, build_route_table(features_state(), SEED), features_state())
    assert ("secure.local  tls: /run/secrets/shop.crt /run/secrets/shop.key, http → https, "
            "hsts max-age=31536000; includeSubDomains; preload") in text
    assert "/ → secure, tls to tasks, verified with backend-ca.pem" in text
    assert "/ → tls-tasks, tls to tasks\n" in text


def many_services_state(tmp_path: Path, count: int) -> Path:
    """A state file whose render is far larger than a pipe's buffer (64 KiB) and stdout's (8 KiB)."""
    services = [service(f"svc{i:04d}", {"com.docker.lb.hosts": f"svc{i:04d}.local", "com.docker.lb.port": "8080"})
                for i in range(count)]
    tasks = [task(s, "wrk-0", ports={8080: 30000 + i}, id=f"task{i:04d}aaaaaaaaaaaaaaaaa")
             for i, s in enumerate(services)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"services": services, "tasks": tasks, "nodes": [node("wrk-0", "10.0.0.10")]}))
    return state


def run_swarmgate(*argv: str) -> subprocess.CompletedProcess[bytes]:
    # Without PYTHONUNBUFFERED, stdout into a pipe is block-buffered: what the process has not flushed
    # when it ends is what an exit that skips the teardown could lose.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED" and not k.startswith("SWARMGATE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "swarmgate", *argv], capture_output=True, env=env, cwd=REPO,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("command", ["render", "routes"])
def test_an_offline_process_that_ends_without_teardown_writes_its_whole_output(
    tmp_path: Path, command: str, size: str
) -> None:
    # Small: the output sits in stdout's buffer until the end; large: it passes through a full pipe.
    state = SEED_STATE if size == "small" else str(many_services_state(tmp_path, 1500))
    expected = io.StringIO()
    run = cmd_render if command == "render" else cmd_routes
    assert run(SEED_CONFIG, state, out=expected) == 0
    assert len(expected.getvalue()) < 8192 if size == "small" else len(expected.getvalue()) > 100_000
    proc = run_swarmgate(command, "-c", SEED_CONFIG, "--state", state)
    assert (proc.returncode, proc.stderr, proc.stdout.decode()) == (0, b"", expected.getvalue())


@pytest.mark.parametrize("command", ["render", "routes"])
def test_an_offline_process_that_fails_ends_with_its_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.json"
    proc = run_swarmgate(command, "-c", SEED_CONFIG, "--state", str(missing))
    assert (proc.returncode, proc.stdout, proc.stderr.decode()) == (
        2, b"", f"swarmgate: {missing}: cannot read: No such file or directory\n")


def test_main_called_with_arguments_returns_instead_of_ending_the_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-c", SEED_CONFIG, "--state", SEED_STATE]) == 0
    assert capsys.readouterr().out == (GOLDEN / "seed-demo.conf").read_text()

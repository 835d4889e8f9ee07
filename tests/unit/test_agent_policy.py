"""The agent's content policy against a key holder who would turn what the proxy writes into what its
root nginx master loads: an `include` or `load_module` of a PUT body, a log, a temp file; a log, pid or
temp directory put where config or code is read; code loaders nginx has besides those two. Each form
is refused with a one-line reason by the agent's own policy (its SWARMGATE_POLICY_CHECK mode), a few
pushed through the real agent (the harness of tests/unit/test_agent.py) to show the status and the last
good config serving; every config the renderer's goldens hold must still pass, as rendered.

The payloads are harmless where a policy without these rules would let them through to `nginx -t`:
paths that do not exist, or that lie in the test's own directory.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from swarmgate.operator.planning.runtime import AGENT_SCRIPT
from tests.unit import test_agent as harness
from tests.unit.test_agent import BUSYBOX, Proxy, digest_of

pytestmark = harness.pytestmark
_stop_signals_not_ignored = harness._stop_signals_not_ignored
workdir = harness.workdir
plain = harness.plain

GOLDEN = Path(__file__).parent.parent / "golden"
RENDERED_DIR = "/var/lib/swarmgate"  # the agent's directory every rendered config names

# name: (where the text goes in the pushed config, the text, what the status must say). DIR is the
# agent's directory spelled with a doubled slash (nginx opens it all the same), STATE its state.
REFUSED: dict[str, tuple[str, str, str]] = {
    "include-a-put-body": ("main", "include DIR/inbox/config;", "include names only"),
    "include-a-log": ("extra", "include /var/log/nginx/swarmgate-test-nonexistent.log;", "include names only"),
    "include-relative-to-the-prefix": ("main", "include modules-enabled/../../../tmp/nonexistent-x.conf;",
                                       "include names only"),
    "include-quoted": ("extra", '"include" "/tmp/nonexistent-x.conf";', "include names only"),
    "include-in-a-map": ("extra", "map $host $swarmgate_x { include /tmp/nonexistent-x.conf; }",
                         "include names only"),
    # The traffic log nginx's workers write (the agent aggregates it): written, never read as config.
    "include-the-traffic-log": ("extra", "include /var/run/swarmgate-traffic;", "include names only"),
    "load-module-from-tmp": ("main", "load_module /tmp/nonexistent-evil.so;", "load_module loads only"),
    "load-module-dot-dot": ("main", "load_module /usr/lib/nginx/modules/../../../../tmp/nonexistent-evil.so;",
                            "load_module loads only"),
    "load-module-relative": ("main", "load_module modules/nonexistent-evil.so;", "load_module loads only"),
    "ssl-engine": ("main", "ssl_engine /tmp/nonexistent-engine;", "'ssl_engine' loads code"),
    "engine-key": ("extra", "server { listen 127.0.0.1:6 ssl; ssl_certificate /tmp/nonexistent.pem; "
                            "ssl_certificate_key engine:/tmp/nonexistent-engine:k; }",
                   "may not load an OpenSSL engine"),
    "perl": ("extra", "perl_modules /tmp; perl_require nonexistent.pm;", "'perl_modules' loads code"),
    "njs": ("extra", "js_import /tmp/nonexistent.js;", "'js_import' loads code"),
    "env-sets-a-variable": ("main", "env LD_PRELOAD=/tmp/nonexistent-evil.so;", "env may pass a variable"),
    # lua_policy dropped every line that starts with `#`; this one starts inside a quoted string.
    "lua-after-a-quoted-hash": ("extra", 'add_header X-A "\n# "; init_by_lua_block { os.exit(1) }',
                                "Lua is admitted only as swarmgate's balancer"),
    "access-log-into-the-control-dir": ("extra", "access_log DIR/control/x.conf;", "access_log writes only"),
    "access-log-into-a-module-dir": ("extra", "access_log /usr/lib/nginx/modules/nonexistent/evil.so;",
                                     "access_log writes only"),
    "error-log-relative": ("main", "error_log nonexistent-dir/x.conf;", "error_log writes only"),
    "pid-over-the-fence": ("main", "pid STATE/fence;", "pid writes only"),
    "temp-path-made-the-workers'": ("extra", "proxy_temp_path /usr/lib/nginx/modules/nonexistent/t;",
                                    "proxy_temp_path must be a directory under /var/cache or /tmp"),
    "cache-path-with-a-variable": ("extra", "proxy_cache_path /tmp/$host keys_zone=z:1m;",
                                   "proxy_cache_path must be a directory"),
    "unix-socket-in-a-module-dir": ("extra", "server { listen unix:/usr/lib/nginx/modules/nonexistent/s.so; }",
                                    "a unix socket nginx listens on is made under /run or /tmp only"),
    "proxy-store": ("extra", "server { listen 127.0.0.1:7; location / { proxy_store on; "
                             "proxy_pass http://127.0.0.1:1; } }", "'proxy_store' writes request bodies"),
    "dav-put": ("extra", "server { listen 127.0.0.1:8; location / { root /tmp; dav_methods PUT; } }",
                "'dav_methods' writes request bodies"),
}


def refused_config(proxy: Proxy, case: str) -> tuple[dict[str, Any], str]:
    where, text, why = REFUSED[case]
    text = text.replace("DIR", str(proxy.dir).replace("/tmp/", "/tmp//")).replace("STATE", str(proxy.state))
    return {where: text}, why


@pytest.mark.parametrize("case", list(REFUSED))
def test_each_form_is_refused_with_a_one_line_reason(workdir: Path, case: str) -> None:
    proxy = Proxy(workdir, 1, 2)  # not started: its config text and directories only
    kw, why = refused_config(proxy, case)
    config = workdir / "candidate.conf"
    config.write_text(proxy.conf("bad", **kw))
    done = policy_check(config, proxy.dir, proxy.state)
    assert done.returncode == 1 and done.stdout.startswith("content policy: ") and why in done.stdout, done.stdout
    assert done.stdout.count("\n") == 1
    # The same text without the refused form passes: the form is what the policy refuses.
    config.write_text(proxy.conf("bad"))
    assert policy_check(config, proxy.dir, proxy.state).returncode == 0


@pytest.mark.parametrize("case", ["include-a-put-body", "load-module-dot-dot", "access-log-into-the-control-dir"])
def test_a_pushed_form_is_rejected_in_the_status_and_the_old_config_serves(plain: Proxy, case: str) -> None:
    kw, why = refused_config(plain, case)
    plain.push("good", term=1, seq=1)
    plain.push("bad", term=1, seq=2, **kw)
    status = plain.status()
    assert (status.serving, status.rejected) == (digest_of(plain.conf("good")), digest_of(plain.conf("bad", **kw)))
    assert status.message.startswith("content policy: ") and why in status.message, status.message
    assert plain.get() == (200, "good")
    assert not (plain.dir / "control" / "x.conf").exists()


def test_what_a_proxy_may_load_and_write_is_admitted(plain: Proxy) -> None:
    """The allowed forms (load_module: tests/unit/test_agent_lua.py): nginx's Debian modules, a
    pass-through `env`, a log in an allowed place, and keys and text that only look like directives."""
    main = "env SWARMGATE_PEERS_FILE;\ninclude /etc/nginx/modules-enabled/*.conf;"
    extra = (f"access_log {plain.tmp}/access.log;\n  client_body_in_file_only off;\n"
             "  map $host $swarmgate_y { perl 1; load_module 2; \"~^a{2}$\" 3; default 0; }\n"
             "  add_header X-B \"include /tmp/x; # load_module\";")
    plain.push("good", term=1, seq=1, main=main, extra=extra)
    status = plain.status()
    assert status.rejected == "", status.message
    assert plain.get() == (200, "good")


def policy_check(config: Path, agent_dir: Path, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "SWARMGATE_TASK_ID": "t1", "SWARMGATE_DIR": str(agent_dir),
           "SWARMGATE_STATE_DIR": str(state or agent_dir / "state"), "SWARMGATE_POLICY_CHECK": str(config)}
    return subprocess.run([str(BUSYBOX), "sh", str(AGENT_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.conf")))
def test_every_rendered_golden_keeps_to_the_content_policy(golden: str, tmp_path: Path) -> None:
    text = (GOLDEN / golden).read_text()
    agent_dir = tmp_path / "swarmgate"
    if RENDERED_DIR in text:  # the bootstrap names no control server; the agent's directory is the test's
        text = text.replace(RENDERED_DIR, str(agent_dir))
    config = tmp_path / "nginx.conf"
    config.write_text(text)
    done = policy_check(config, agent_dir)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout + done.stderr


def test_logs_go_where_nothing_reads_them_as_config(workdir: Path) -> None:
    """Checked only (nginx would write these paths on this machine): stdout, syslog, /var/log, the
    traffic log under /run, a pid under /run, temp files under /var/cache."""
    proxy = Proxy(workdir, 1, 2)
    extra = ("access_log /var/run/swarmgate-traffic combined buffer=64k flush=1s;\n"
             "  access_log syslog:server=unix:/dev/log;\n  access_log /var/log/nginx/access.log;\n"
             "  proxy_temp_path /var/cache/nginx/proxy_temp 1 2;")
    config = workdir / "candidate.conf"
    config.write_text(proxy.conf("ok", extra=extra).replace(f"pid {proxy.tmp}/nginx.pid;", "pid /run/nginx.pid;"))
    done = policy_check(config, proxy.dir, proxy.state)
    assert (done.returncode, done.stdout) == (0, ""), done.stdout


def test_the_policy_check_mode_says_why(tmp_path: Path) -> None:
    config = tmp_path / "nginx.conf"
    config.write_text((GOLDEN / "seed-demo.conf").read_text().replace(RENDERED_DIR, str(tmp_path / "swarmgate"))
                      + "load_module /tmp/nonexistent-evil.so;\n")
    done = policy_check(config, tmp_path / "swarmgate")
    assert done.returncode == 1
    assert done.stdout.startswith("content policy: load_module loads only /usr/lib/nginx/modules/NAME.so")

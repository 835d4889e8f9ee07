"""The pure parts of the peers benchmark (bench/peers.py, bench/peer_configs.py): the one rewrite made
to swarmgate's render before it runs on loopback changes only what it says it changes, and the goal
verdicts come from the figures. No wrk, no server started."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import crossplane
import pytest

from bench import peer_configs as pc
from bench import peers
from swarmgate.operator.cli.offline import cmd_render

SEED_TOML = Path(__file__).resolve().parents[2] / "lab" / "seed-config.toml"
BACKEND = 41234
PORTS = {80: 50080, 443: 50443}
TLS = (Path("/tmp/bench/cert.pem"), Path("/tmp/bench/key.pem"))
CONTROL_INCLUDE = "/var/lib/swarmgate/control/*.conf"


def rendered(tmp_path: Path, *, keepalive: int | None = None, services: int = 1, options: tuple[str, ...] = ()) -> str:
    config, state = tmp_path / "config.toml", tmp_path / "state.json"
    config.write_text(pc.seed_toml(SEED_TOML.read_text(), upstream_keepalive=keepalive, options=options))
    state.write_text(json.dumps(pc.state_document(services, BACKEND)))
    out, err = io.StringIO(), io.StringIO()
    assert cmd_render(str(config), str(state), out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


def parsed(text: str, path: Path) -> list[dict[str, Any]]:
    """nginx's directive tree (crossplane), includes not followed."""
    path.write_text(text)
    payload = crossplane.parse(str(path), single=True, comments=False, check_ctx=False, check_args=False)
    assert payload["status"] == "ok", payload["errors"]
    tree: list[dict[str, Any]] = payload["config"][0]["parsed"]
    return tree


def expected_change(d: dict[str, Any], prefix: Path) -> list[tuple[str, list[str]]] | None:
    """What `loopback_rewrite` claims to make of directive `d` (None: left as it is)."""
    args: list[str] = d["args"]
    if d["directive"] == "user":
        return [("user", ["bench-user"])]
    if d["directive"] == "pid":
        return [("pid", [str(prefix / "nginx.pid")])]
    if d["directive"] == "listen":
        port = int(args[0].rsplit(":", 1)[-1])
        return [("listen", [f"127.0.0.1:{PORTS[port]}", *args[1:]])]
    if d["directive"] in ("access_log", "error_log") and args[0].startswith("/") and not args[0].startswith("/dev/"):
        return [(d["directive"], [str(prefix / "logs" / Path(args[0]).name), *args[1:]])]  # the traffic log
    if d["directive"] == "include" and args == [CONTROL_INCLUDE]:
        return [("ssl_certificate", [str(TLS[0])]), ("ssl_certificate_key", [str(TLS[1])])]
    return None


def assert_same_but_claimed(before: list[dict[str, Any]], after: list[dict[str, Any]], prefix: Path) -> int:
    """Walk both trees side by side; return how many directives changed."""
    changed, i = 0, 0
    for d in before:
        claim = expected_change(d, prefix)
        if claim is None:
            a = after[i]
            assert (a["directive"], a["args"]) == (d["directive"], d["args"]), f"line {d['line']}: {d} became {a}"
            assert ("block" in a) == ("block" in d)
            if "block" in d:
                changed += assert_same_but_claimed(d["block"], a["block"], prefix)
            i += 1
            continue
        for directive, args in claim:
            assert (after[i]["directive"], after[i]["args"]) == (directive, args), f"line {d['line']}"
            i += 1
        changed += 1
    assert i == len(after), f"the rewrite added {after[i:]}"
    return changed


def blocks(tree: list[dict[str, Any]], name: str) -> list[list[str]]:
    found = []
    for d in tree:
        if d["directive"] == name:
            found.append(d["args"])
        found += blocks(d.get("block", []), name)
    return found


@pytest.mark.parametrize("keepalive", [None, 64])
def test_the_loopback_rewrite_changes_only_what_it_claims(tmp_path: Path, keepalive: int | None) -> None:
    text = rendered(tmp_path, keepalive=keepalive)
    out = pc.loopback_rewrite(text, ports=PORTS, prefix=tmp_path / "run", tls=TLS, user="bench-user")
    before, after = parsed(text, tmp_path / "before.conf"), parsed(out, tmp_path / "after.conf")

    changed = assert_same_but_claimed(before, after, tmp_path / "run")

    # user, pid, the control include, the 4 listeners (80 twice, 443 twice) of the seed's render and
    # the traffic log (in the http block and in /nginx_status)
    assert changed == 9
    for name in ("upstream", "location", "server", "map"):
        assert blocks(after, name) == blocks(before, name)
    assert blocks(after, "proxy_pass") == blocks(before, "proxy_pass") != []
    assert all(args[0].startswith("127.0.0.1:") for args in blocks(after, "listen"))
    assert f"server 127.0.0.1:{BACKEND};" in out
    assert ("keepalive 64;" in out) == (keepalive == 64)


def test_the_lean_target_renders_none_of_interlocks_per_request_extras_and_the_default_all(tmp_path: Path) -> None:
    extras = ("$request_id", "x-request-id", "x-upstream-addr", "swarmgate-traffic")
    lean, default = rendered(tmp_path, options=pc.LEAN), rendered(tmp_path)
    assert [x for x in extras if x in lean] == [] and [x for x in extras if x not in default] == []
    no_reqid = rendered(tmp_path, options=pc.NO_REQUEST_IDS)
    assert "$request_id" not in no_reqid and "x-upstream-addr" in no_reqid and "swarmgate-traffic" in no_reqid


def test_the_big_render_keeps_the_demo_route_and_every_other(tmp_path: Path) -> None:
    text = rendered(tmp_path, services=30)
    out = pc.loopback_rewrite(text, ports=PORTS, prefix=tmp_path, tls=TLS, user="bench-user")
    after = parsed(out, tmp_path / "after.conf")

    assert len(blocks(after, "upstream")) == 30
    assert "demo.local" in out and "app-28.example.test" in out
    assert f"server 127.0.0.1:{BACKEND};" in out


def test_log_files_move_under_the_prefix_and_dev_logs_stay(tmp_path: Path) -> None:
    text = ("error_log /dev/stdout warn;\nhttp {\n    access_log /var/log/nginx/access.log main;\n"
            "    access_log /dev/stdout;\n}\n")
    out = pc.loopback_rewrite(text, ports=PORTS, prefix=tmp_path, tls=TLS, user="u")
    assert out == (f"error_log /dev/stdout warn;\nhttp {{\n    access_log {tmp_path}/logs/access.log main;\n"
                   "    access_log /dev/stdout;\n}\n")


@pytest.mark.parametrize("line", [
    "ssl_certificate /run/secrets/site.crt;",
    "listen [::]:80;",
    "include /etc/nginx/mime.types;",
    "listen 8443 ssl;",  # a port it was given no loopback port for
])
def test_a_line_it_cannot_place_on_loopback_is_an_error(line: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        pc.loopback_rewrite(f"http {{\n    server {{\n        {line}\n    }}\n}}\n", ports=PORTS, prefix=tmp_path,
                            tls=TLS, user="u")


def row(target: str, rps: float, p99: float, cpu: float = 0.0) -> dict[str, Any]:
    return {"target": target, "rps": rps, "p99_ms": p99, "proxy_us": cpu}


def verdicts(summary: list[dict[str, Any]], nginx_t: dict[str, dict[str, float]]) -> list[str]:
    return [g["verdict"] for g in peers.goal_checks(summary, nginx_t)]


def test_the_goals_are_computed_from_the_figures() -> None:
    minimal = row("nginx-minimal", 50000, 0.5)
    t = {size: {"seconds": seconds, "max_rss_mib": rss} for size, seconds, rss in (
        ("1000", 0.1, 20.0), ("10000", 1.2, 160.0), ("lua 1000", 0.1, 10.0), ("lua 10000", 1.2, 160.0))}
    # exactly at every limit: meets
    assert verdicts([minimal, row("swarmgate", 45000, 0.6, 11.0), row("swarmgate-10k", 40500, 9.0),
                     row("swarmgate-lua", 45000, 0.6), row("swarmgate-lua-10k", 40500, 9.0),
                     row("swarmgate-metrics-off", 50000, 0.5, 10.0), row("swarmgate-busybox-awk", 45000, 0.6, 11.0),
                     row("swarmgate-lean", 45000, 0.5), row("swarmgate-no-reqid", 45000, 0.5)], t) == ["meets"] * 14
    slow = {size: {"seconds": seconds, "max_rss_mib": rss} for size, seconds, rss in (
        ("1000", 0.1, 20.0), ("10000", 1.21, 160.1), ("lua 1000", 0.1, 10.0), ("lua 10000", 1.21, 160.1))}
    assert verdicts([minimal, row("swarmgate", 44999, 0.61, 11.1), row("swarmgate-10k", 40000, 0.7),
                     row("swarmgate-lua", 45000, 0.6), row("swarmgate-lua-10k", 40000, 0.7),
                     row("swarmgate-metrics-off", 50000, 0.5, 10.0), row("swarmgate-busybox-awk", 44999, 0.6, 11.1),
                     row("swarmgate-lean", 44999, 0.5), row("swarmgate-no-reqid", 44999, 0.5)], slow) == ["misses"] * 14
    checks = peers.goal_checks([minimal, row("swarmgate", 25000, 1.0)], {})
    assert [g["verdict"] for g in checks] == ["misses", "misses"] + ["not measured"] * 12
    assert [g["figure"] for g in checks[:2]] == [0.5, 2.0]


def test_debians_modules_include_stays_and_their_folder_is_linked_under_the_prefix(tmp_path: Path) -> None:
    text = "include /etc/nginx/modules-enabled/*.conf;\nhttp {\n}\n"
    assert pc.loopback_rewrite(text, ports=PORTS, prefix=tmp_path, tls=TLS, user="u") == text
    assert (tmp_path / "modules").resolve() == pc.MODULES_DIR.resolve()


def test_summary_ratios_are_to_the_minimal_proxy() -> None:
    def run(target: str, rps: float, p99: float, round_: int) -> peers.PeerRun:
        return peers.PeerRun(target, round_, 1000, rps, 0.1, p99, 0, 0.5, 0.2, {})

    runs = [run("nginx-minimal", rps, 0.5, i) for i, rps in enumerate((40000, 50000, 60000))]
    runs += [run("swarmgate", rps, p99, i) for i, (rps, p99) in enumerate(((10000, 2.0), (25000, 1.0), (1, 9.0)))]
    rows = {r["target"]: r for r in peers.summarize(runs, list(peers.TARGETS))}
    assert (rows["swarmgate"]["rps"], rows["swarmgate"]["rps_ratio"], rows["swarmgate"]["p99_ratio"]) == \
        (10000, 0.2, 4.0)
    assert rows["nginx-minimal"]["rps_ratio"] == 1.0


def test_the_peers_section_replaces_its_own_and_nothing_else() -> None:
    lab = "# Data-plane overhead (lab)\n\n## Keep-alive connections\n\nfigures\n"
    first = pc_section("one")
    merged = peers.merge_markdown(lab, first)
    assert merged.startswith(lab.rstrip("\n")) and merged.endswith(first)
    again = peers.merge_markdown(merged + "\n## after\n", pc_section("two"))
    assert again == lab.rstrip("\n") + "\n\n" + pc_section("two").rstrip("\n") + "\n\n## after\n"
    assert peers.merge_markdown(None, first) == "# Data-plane overhead\n\n" + first


def pc_section(body: str) -> str:
    return f"{peers.BEGIN}\n{body}\n{peers.END}\n"

"""Upstream keep-alive against backends that close idle connections: failed requests with nginx's
own idle timeout, none with swarmgate's defaults, side by side in one run, on loopback.

Each case is one backend (bench/idle_backend.py: it closes a connection `idle` seconds after its last
response) behind its own nginx running swarmgate's render of the seed's configuration for one routed
service, `demo.local`, whose task is that backend (`swarmgate render`'s code, then the loopback
rewrite of bench/peer_configs.py). The cases differ only in the backend's idle timeout and in what
the configuration says:

* `nginx-default-node`: `UpstreamKeepaliveTimeout = "60s"`, nginx's own default (what `keepalive N;`
  alone gives, as in most hand-written configs), before a Node-like backend (5 s);
* `swarmgate-node`: swarmgate's defaults (1.5 s), the same backend;
* `swarmgate-1s-unlabelled`: swarmgate's defaults before a backend that closes after 1 s, below
  what the default covers, and no label: why the label exists;
* `swarmgate-1s-labelled`: the same with `swarmgate.backend_idle_timeout=1s` (the pool idles 0.5 s).

The load provokes the race on purpose: per case, 8 clients send a burst (half GET, half POST; each
client on its own keep-alive connection to nginx), then all wait as long as the backend's idle timeout,
give or take a few milliseconds (a sweep), so the burst reaches nginx just as the backend closes the
connections the previous burst left idle. The backend's FIN leaves `--fin-delay` after it stops
serving a connection (default 0, as on loopback; a few ms: as the close reaches a proxy across a network).
A failed request is any answer but the backend's `200 ok`, or none. nginx retries a GET that lost the
race on a fresh connection and never a POST, so the POSTs show the losses; the nginx error log shows
every race nginx saw (GETs included). Results: bench/keepalive-race.md and .json.

    python bench/keepalive_race.py [--seconds 180] [--fin-delay 0]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import pwd
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer_configs as pc  # noqa: E402
from bench.peers import Running, commit, nginx_argv, servers, start, throwaway_tls, two_ports  # noqa: E402
from bench.report import write_report  # noqa: E402
from swarmgate.operator.cli.offline import cmd_render  # noqa: E402
from tests import factories as f  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402

OUT = REPO / "bench" / "keepalive-race"
CLIENTS = 8
# Milliseconds around the backend's idle timeout at which each burst is sent, in turn.
SWEEP_MS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
# nginx's error log lines that say an upstream connection was lost under a request.
RACE_MARKS = ("upstream prematurely closed", "recv() failed", "writev() failed", "Connection reset by peer")


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    backend_idle: float
    keepalive_timeout: str | None = None  # UpstreamKeepaliveTimeout; None: swarmgate's default
    label: str | None = None  # swarmgate.backend_idle_timeout on the service


CASES = (
    Case("nginx-default-node", "nginx's own idle timeout (60 s), backend closes after 5 s (Node)", 5.0, "60s"),
    Case("swarmgate-node", "swarmgate's defaults (1.5 s), backend closes after 5 s (Node)", 5.0),
    Case("swarmgate-1s-unlabelled", "swarmgate's defaults (1.5 s), backend closes after 1 s, no label", 1.0),
    Case("swarmgate-1s-labelled", "the same with `swarmgate.backend_idle_timeout=1s` (pool idles 0.5 s)", 1.0,
         label="1s"),
)


def log(msg: str) -> None:
    print(f"[keepalive-race {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def case_toml(seed: str, case: Case, error_log: str) -> str:
    extra = f'\n      ErrorLogPath = "{error_log}"'
    if case.keepalive_timeout is not None:
        extra += f'\n      UpstreamKeepaliveTimeout = "{case.keepalive_timeout}"'
    marker = "[Extensions.default.Config]"
    return seed.replace(marker, marker + extra, 1)


def case_state(case: Case, backend: int) -> dict[str, list[Any]]:
    labels = {"com.docker.lb.hosts": pc.DEMO_HOST, "com.docker.lb.port": str(pc.DEMO_TARGET_PORT)}
    if case.label is not None:
        labels["swarmgate.backend_idle_timeout"] = case.label
    demo = f.service("demo", labels)
    lo = f.node("bench-loopback", pc.LOOPBACK)
    return {"services": [demo], "tasks": [f.task(demo, lo["ID"], ports={pc.DEMO_TARGET_PORT: backend})],
            "nodes": [lo]}


def render_here(toml: str, state: dict[str, list[Any]], workdir: Path) -> str:
    """`swarmgate render` (what `python -m swarmgate render` runs), in this process: it starts faster."""
    config, state_file = workdir / "config.toml", workdir / "state.json"
    config.write_text(toml)
    state_file.write_text(json.dumps(state))
    out, err = io.StringIO(), io.StringIO()
    if cmd_render(str(config), str(state_file), out=out, err=err) != 0:
        raise SystemExit(f"swarmgate render failed: {err.getvalue().strip()}")
    return out.getvalue()


@dataclass
class Launched:
    case: Case
    port: int
    backend: Running
    error_log: Path


def launch(case: Case, work: Path, started: list[Running], *, fin_delay: str) -> Launched:
    """The case's backend and its nginx, both answering."""
    backend = free_port()
    started.append(start(f"{case.name}-backend", [sys.executable, str(REPO / "bench" / "idle_backend.py"),
                                                   "--port", str(backend), "--idle", str(case.backend_idle),
                                                   "--fin-delay", fin_delay,
                                                   "--counts", str(work / f"{case.name}-backend.json")], work))
    prefix = work / case.name
    (prefix / "logs").mkdir(parents=True)
    text = render_here(case_toml((REPO / "lab" / "seed-config.toml").read_text(), case, "/var/log/nginx/error.log"),
                       case_state(case, backend), prefix)
    port, tls_port = two_ports()
    conf = prefix / "nginx.conf"
    conf.write_text(pc.loopback_rewrite(text, ports={80: port, 443: tls_port}, prefix=prefix,
                                        tls=throwaway_tls(prefix), user=pwd.getpwuid(os.geteuid()).pw_name))
    started.append(start(case.name, nginx_argv(prefix, conf), prefix))
    nginx = started[-1]
    wait_for(lambda: _answers(port, nginx), timeout=30, interval=0.1, what=f"{case.name} answers")
    (prefix / "logs" / "error.log").write_text("")  # from here on, only the load's races
    return Launched(case, port, started[-2], prefix / "logs" / "error.log")


def _answers(port: int, nginx: Running) -> bool:
    if not nginx.alive():
        raise SystemExit(f"{nginx.name} did not start: {nginx.why_not()}")
    return asyncio.run(_one_request(port, "GET")) == 200


async def _one_request(port: int, method: str) -> int:
    try:
        reader, writer = await asyncio.open_connection(pc.LOOPBACK, port)
    except OSError:
        return 0
    try:
        return await request(reader, writer, method)
    finally:
        writer.close()


async def request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str) -> int:
    """One request on an open keep-alive connection to nginx: the status if the body is the backend's
    `ok`, else the status (or 0: no answer) negated, so every answer but the backend's counts as failed."""
    body = b"k=v" if method == "POST" else b""
    writer.write(f"{method} / HTTP/1.1\r\nHost: {pc.DEMO_HOST}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    try:
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        content = await asyncio.wait_for(reader.readexactly(length), timeout=10)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        return 0
    return status if status == 200 and content == b"ok\n" else -status


async def load(case: Case, port: int, seconds: float) -> dict[str, int]:
    """Bursts of CLIENTS requests, each burst sent the backend's idle timeout (swept) after the last."""
    counts = {"GET": 0, "POST": 0, "GET failed": 0, "POST failed": 0, "bursts": 0}
    conns = [await asyncio.open_connection(pc.LOOPBACK, port) for _ in range(CLIENTS)]
    deadline = time.monotonic() + seconds
    cycle = 0
    try:
        while time.monotonic() < deadline:
            methods = ["POST" if (i + cycle) % 2 else "GET" for i in range(CLIENTS)]
            statuses = await asyncio.gather(*(request(r, w, m) for (r, w), m in zip(conns, methods, strict=True)))
            for i, (method, status) in enumerate(zip(methods, statuses, strict=True)):
                counts[method] += 1
                if status != 200:
                    counts[f"{method} failed"] += 1
                    conns[i][1].close()  # nginx may have closed it too: a new client connection
                    conns[i] = await asyncio.open_connection(pc.LOOPBACK, port)
            counts["bursts"] += 1
            await asyncio.sleep(case.backend_idle + SWEEP_MS[cycle % len(SWEEP_MS)] / 1000)
            cycle += 1
    finally:
        for _, writer in conns:
            writer.close()
    return counts


def races_logged(error_log: Path) -> int:
    text = error_log.read_text(errors="replace") if error_log.exists() else ""
    return sum(1 for line in text.splitlines() if any(mark in line for mark in RACE_MARKS))


def run(seconds: float, fin_delay: str, cases: tuple[Case, ...] = CASES) -> dict[str, Any]:
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
                               "seconds": seconds, "fin_delay": fin_delay, "clients": CLIENTS, "cases": []}
    with tempfile.TemporaryDirectory(prefix="swarmgate-keepalive-race-") as tmp, servers() as started:
        work = Path(tmp)
        launched = [launch(case, work, started, fin_delay=fin_delay) for case in cases]
        log(f"{len(launched)} cases up; {seconds:.0f} s of bursts, side by side")

        async def everything() -> list[dict[str, int]]:
            return list(await asyncio.gather(*(load(x.case, x.port, seconds) for x in launched)))

        counts = asyncio.run(everything())
        for x, c in zip(launched, counts, strict=True):
            x.backend.stop()
            counts_file = work / f"{x.case.name}-backend.json"
            served = json.loads(counts_file.read_text()) if counts_file.exists() else {}
            row = {"case": x.case.name, "what": x.case.what, "backend_idle": x.case.backend_idle, **c,
                   "races_in_nginx_log": races_logged(x.error_log), **served}
            results["cases"].append(row)
            log(f"{x.case.name:24} GET {c['GET']} failed {c['GET failed']}  POST {c['POST']} failed "
                f"{c['POST failed']}  races nginx saw {row['races_in_nginx_log']}")
    return results


def markdown(r: dict[str, Any]) -> str:
    lines = ["# Upstream keep-alive against backends that close idle connections", "",
             f"Generated by `bench/keepalive_race.py` on {r['date']}, commit {r['commit']}: the cases side by side "
             f"for {r['seconds']:.0f} s, {r['clients']} clients per case sending bursts (half GET, half POST) "
             "as far apart as the backend's idle timeout, swept over a few milliseconds; the backend's FIN "
             f"leaves {r['fin_delay']} s after it stops serving a connection. `races nginx saw`: error-log lines "
             "of an upstream connection lost under a request (a lost GET is retried on a fresh connection).", "",
             "| case | requests | failed GET | failed POST | races nginx saw |", "|---|---|---|---|---|"]
    for c in r["cases"]:
        lines.append(f"| {c['what']} | {c['GET'] + c['POST']:,} | {c['GET failed']} of {c['GET']:,} | "
                     f"**{c['POST failed']}** of {c['POST']:,} | {c['races_in_nginx_log']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--fin-delay", default="0", help="seconds until the backend's FIN leaves, or 'never'")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    results = run(args.seconds, args.fin_delay)
    write_report(args.out, results, markdown)
    log(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

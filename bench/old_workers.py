"""Old nginx workers under continuous route changes and websocket clients, on loopback: without a
`worker_shutdown_timeout` (nginx's default) every reload leaves a worker generation behind for as
long as one of its websockets lasts; with swarmgate's `WorkerShutdownTimeout` the workers and the
proxy's memory reach a steady state, and the websocket clients an old worker closes reconnect.

Two proxies side by side, each swarmgate's render (`swarmgate render`'s code, then the loopback
rewrite of bench/peer_configs.py) of the seed's configuration and 20 routed services, one of them
`demo.local` with the websocket endpoint `/ws` before the lab's demo backend (lab/images/demo.c, built
here with gcc), the others routed to addresses never sent a request:

* `no-timeout`: `WorkerShutdownTimeout = "0"`: no `worker_shutdown_timeout`, as before;
* `timeout`: `WorkerShutdownTimeout` set to `--timeout` (default 10 s, scaled down from the default
  240 s so that a few minutes show the steady state: it holds about timeout / interval generations).

Every `--interval` seconds, each proxy gets a route change (one service's host name changes; the
config is re-rendered, then nginx reloads), after 5 new websocket clients connected through it: each
completes the handshake, has a message echoed, and then sends one every 10 s, as a live client does
(the demo backend closes a websocket idle for 30 s). A client whose connection ends counts
how it ended (EOF, the clean TCP close nginx makes, or a reset) and reconnects at once; a reconnect
counts only once its own echo came back. After each change: nginx's worker processes and the RSS and
PSS of the master and its workers. Results: bench/old-workers.md and .json.

    python bench/old_workers.py [--changes 60] [--interval 2] [--timeout 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import peer_configs as pc  # noqa: E402
from bench.keepalive_race import render_here  # noqa: E402
from bench.peers import Running, _children, commit, nginx_argv, servers, start, throwaway_tls, two_ports  # noqa: E402
from bench.report import write_report  # noqa: E402
from tests import factories as f  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402

OUT = REPO / "bench" / "old-workers"
SERVICES = 20
NEW_CLIENTS = 5  # per change, as in the issue's measurement
HEARTBEAT = 10.0  # seconds between a client's messages


def log(msg: str) -> None:
    print(f"[old-workers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def state(backend: int, change: int) -> dict[str, list[Any]]:
    demo = f.service("demo", {"com.docker.lb.hosts": pc.DEMO_HOST, "com.docker.lb.port": "8080",
                              "com.docker.lb.websocket_endpoints": "/ws"})
    lo, far = f.node("bench-loopback", pc.LOOPBACK), f.node("bench-far", "198.18.200.1")
    doc: dict[str, list[Any]] = {"services": [demo], "tasks": [f.task(demo, lo["ID"], ports={8080: backend})],
                                 "nodes": [lo, far]}
    for i in range(1, SERVICES):
        host = f"app-{i}-{change}.example.test" if i == 1 else f"app-{i}.example.test"  # the route change
        svc = f.service(f"app-{i}", {"com.docker.lb.hosts": host, "com.docker.lb.port": "8080"})
        doc["services"].append(svc)
        doc["tasks"].append(f.task(svc, far["ID"], ports={8080: 30000 + i}))
    return doc


@dataclass
class Proxy:
    name: str
    toml: str
    port: int
    conf: Path
    prefix: Path
    tls: tuple[Path, Path]
    server: Running | None = None
    samples: list[dict[str, float]] = field(default_factory=list)
    ws: dict[str, int] = field(default_factory=lambda: {"opened": 0, "eof": 0, "reset": 0, "reconnected": 0,
                                                         "failed": 0})
    address: str = pc.LOOPBACK  # where the websocket clients connect, with `Host: host`
    host: str = pc.DEMO_HOST

    def write(self, backend: int, change: int) -> None:
        text = render_here(self.toml, state(backend, change), self.prefix)
        self.conf.write_text(pc.loopback_rewrite(text, ports={80: self.port, 443: two_ports()[0]}, prefix=self.prefix,
                                                 tls=self.tls, user=pwd.getpwuid(os.geteuid()).pw_name))


def memory(pids: list[int]) -> tuple[float, float]:
    """RSS and PSS (MiB) summed over the processes (PSS shares each page among those that map it)."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


def sample(proxy: Proxy, change: int, clients: int) -> dict[str, float]:
    assert proxy.server is not None
    workers = _children(proxy.server.proc.pid)
    rss, pss = memory([proxy.server.proc.pid, *workers])
    row = {"change": change, "t": round(time.monotonic(), 1), "workers": len(workers),
           "rss_mib": round(rss, 1), "pss_mib": round(pss, 1), "open_websockets": clients}
    proxy.samples.append(row)
    return row


class WsTarget(Protocol):
    """Where websocket clients connect (`Proxy` here; an LB node's proxy in bench/old_workers_lab.py)
    and the tally of how their connections went."""

    address: str
    port: int
    host: str
    ws: dict[str, int]


async def handshake(target: WsTarget) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(target.address, target.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET /ws HTTP/1.1\r\nHost: {target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    if not head.startswith(b"HTTP/1.1 101"):
        raise OSError(f"no upgrade: {head[:40]!r}")
    await echo(reader, writer)
    return reader, writer


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One masked text frame out, its echo back (OSError if it does not come)."""
    mask = os.urandom(4)
    payload = b"hello"
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    echoed = await asyncio.wait_for(reader.readexactly(2 + len(payload)), timeout=10)
    if echoed[2:] != payload:
        raise OSError("no echo")


async def client(proxy: WsTarget, stop: asyncio.Event, open_count: list[int]) -> None:
    """One websocket client: connect, echo, wait for the end, reconnect; until `stop`."""
    first = True
    while not stop.is_set():
        try:
            reader, writer = await handshake(proxy)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            proxy.ws["failed"] += 1
            await asyncio.sleep(0.2)
            continue
        proxy.ws["opened" if first else "reconnected"] += 1
        first = False
        open_count[0] += 1
        stopping = asyncio.ensure_future(stop.wait())
        ended = ""
        while not ended:  # a message every HEARTBEAT s, as a live client sends (the demo drops a 30 s idle one)
            waiting = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({waiting, stopping}, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                try:
                    ended = "eof" if waiting.result() == b"" else "reset"
                except OSError:
                    ended = "reset"
                break
            waiting.cancel()
            if stopping.done():
                break
            try:
                await echo(reader, writer)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                ended = "reset"  # the heartbeat's echo did not come back
        open_count[0] -= 1
        stopping.cancel()
        if ended:
            proxy.ws[ended] += 1
        writer.close()


async def schedule(proxies: list[Proxy], backend: int, changes: int, interval: float) -> None:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    counts = {p.name: [0] for p in proxies}
    for change in range(1, changes + 1):
        for p in proxies:
            tasks += [asyncio.ensure_future(client(p, stop, counts[p.name])) for _ in range(NEW_CLIENTS)]
        await asyncio.sleep(interval / 2)
        for p in proxies:
            p.write(backend, change)
            assert p.server is not None
            os.kill(p.server.proc.pid, signal.SIGHUP)
        await asyncio.sleep(interval / 2)
        rows = [sample(p, change, counts[p.name][0]) for p in proxies]
        log(f"change {change}/{changes}: " + "; ".join(
            f"{p.name} {r['workers']:.0f} workers, RSS {r['rss_mib']:.0f} MiB, PSS {r['pss_mib']:.0f} MiB, "
            f"{r['open_websockets']:.0f} ws" for p, r in zip(proxies, rows, strict=True)))
    stop.set()
    await asyncio.gather(*tasks)


def run(changes: int, interval: float, timeout: float) -> dict[str, Any]:
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(),
                               "changes": changes, "interval": interval, "timeout_seconds": timeout,
                               "services": SERVICES, "new_clients_per_change": NEW_CLIENTS}
    seed = (REPO / "lab" / "seed-config.toml").read_text()
    marker = "[Extensions.default.Config]"
    with tempfile.TemporaryDirectory(prefix="swarmgate-old-workers-") as tmp, servers() as started:
        work = Path(tmp)
        demo = work / "demo"
        subprocess.run(["gcc", "-O2", "-o", str(demo), str(REPO / "lab" / "images" / "demo.c")], check=True,
                       capture_output=True, timeout=120)
        backend = free_port()
        started.append(start("demo", [str(demo)], work, env={"PORT": str(backend)}))
        proxies = []
        for name, value in (("no-timeout", "0"), ("timeout", f"{timeout:g}s")):
            prefix = work / name
            (prefix / "logs").mkdir(parents=True)
            toml = seed.replace(marker, f'{marker}\n      WorkerShutdownTimeout = "{value}"', 1)
            proxy = Proxy(name, toml, free_port(), prefix / "nginx.conf", prefix, throwaway_tls(prefix))
            proxy.write(backend, 0)
            started.append(start(name, nginx_argv(prefix, proxy.conf), prefix))
            proxy.server = started[-1]
            wait_for(lambda p=proxy: len(_children(p.server.proc.pid)) >= 1, timeout=30, what=f"{name}'s worker")
            proxies.append(proxy)
        log(f"{changes} route changes, one every {interval:g} s, {NEW_CLIENTS} new websockets before each")
        asyncio.run(schedule(proxies, backend, changes, interval))
        for p in proxies:
            results[p.name] = {"samples": p.samples, "websockets": p.ws}
    return results


def markdown(r: dict[str, Any]) -> str:
    lines = ["# Old nginx workers under route changes and websockets", "",
             f"Generated by `bench/old_workers.py` on {r['date']}, commit {r['commit']}: {r['changes']} route "
             f"changes (a reload each), one every {r['interval']:g} s, {r['new_clients_per_change']} new websocket "
             f"clients before each, a {r['services']}-service render; the two proxies side by side. RSS and PSS: "
             "the master and its workers, summed (PSS counts a shared page once).", "",
             "| proxy | after change | workers | RSS | PSS | open websockets |", "|---|---|---|---|---|---|"]
    for name, what in (("no-timeout", "no `worker_shutdown_timeout`"),
                       ("timeout", f"`WorkerShutdownTimeout = \"{r['timeout_seconds']:g}s\"`")):
        samples = r[name]["samples"]
        picks = sorted({max(1, len(samples) // 4) - 1, len(samples) // 2 - 1, len(samples) - 1})
        for i in picks:
            s = samples[i]
            lines.append(f"| {what} | {s['change']:.0f} | {s['workers']:.0f} | {s['rss_mib']:.0f} MiB | "
                         f"{s['pss_mib']:.0f} MiB | {s['open_websockets']:.0f} |")
    lines += ["", "| proxy | websockets opened | closed by the proxy (EOF) | reset | reconnected, echo back | "
              "handshakes failed |", "|---|---|---|---|---|---|"]
    for name in ("no-timeout", "timeout"):
        w = r[name]["websockets"]
        lines.append(f"| {name} | {w['opened']} | {w['eof']} | {w['reset']} | {w['reconnected']} | {w['failed']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=60)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    results = run(args.changes, args.interval, args.timeout)
    write_report(args.out, results, markdown)
    log(f"wrote {args.out.with_suffix('.md')} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The load client of the data-plane benchmarks: one `wrk` run, and what the machine did meanwhile.

`bench/dataplane.py` (the lab's proxies) and `bench/peers.py` (proxies on loopback) both measure
with this, so their figures mean the same thing: requests/s and p50/p99 from `wrk --latency`, the
CPU wrk itself used (from this process's reaped-children accounting), how idle the whole machine
was, and the busiest process names over the run. The machine is shared: the idle share says
whether the machine, rather than the thing measured, set the ceiling.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass(frozen=True)
class Measured:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors (connect, read, write, timeout) and answers that were not 2xx/3xx
    client_cpu: float  # wrk's CPU seconds per wall second (1.0 = one core)
    host_idle: float  # share of all cores idle during the run
    cpu_by: dict[str, float]  # the busiest process names: CPU seconds per wall second, over the machine
    busy_cores: float = 0.0  # CPU seconds per wall second used on the whole machine
    own_cores: float = 0.0  # of which by the processes named in `own` (and wrk)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests, requests/s, p50/p99 (ms) and errors from `wrk --latency` output."""
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M)}
    done = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", out, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if done is None or rps is None or set(pct) != {50, 99}:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = (sum(int(g) for g in sock.groups()) if sock else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return {"requests": int(done.group(1)), "seconds": _ms(done.group(2) + done.group(3)) / 1e3,
            "rps": float(rps.group(1)), "p50_ms": pct[50], "p99_ms": pct[99], "errors": errors}


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies over all cores, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def proc_stats() -> Iterator[tuple[int, str]]:
    """(pid, the text of /proc/PID/stat) of every process still there when it is read. Listed with
    os.listdir: pathlib's glob stats each entry again and raised ProcessLookupError for a process that
    exited meanwhile (which stopped a fresh-clone `make dataplane` once)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                yield int(name), Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue


def proc_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (name, CPU seconds used by it and its reaped children) for every process (the lab's demo
    backend forks a child per connection; the parent's reaped-children time holds theirs)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid, text in proc_stats():
        name = text[text.index("(") + 1:text.rindex(")")]
        f = text[text.rindex(")") + 2:].split()
        # This process's reaped-children time is wrk's (and nothing else it runs during a measurement).
        out[pid] = ("wrk (client)" if pid == os.getpid() else name, sum(float(x) for x in f[11:15]) / tick)
    return out


def cpu_by_name(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall: float,
                top: int = 6) -> dict[str, float]:
    used: dict[str, float] = {}
    for pid, (name, cpu) in after.items():
        old = before.get(pid)
        delta = cpu - (old[1] if old else 0.0)  # by pid: a kernel worker's name changes with its work
        if delta > 0:
            used[name] = used.get(name, 0.0) + delta
    busiest = sorted(used.items(), key=lambda kv: -kv[1])[:top]
    return {name: round(cpu / wall, 2) for name, cpu in busiest}


def run_wrk(cmd: list[str], timeout: float, own: Collection[int] = ()) -> Measured:
    """Run one `wrk --latency` command line and measure the machine around it. `own`: the pids of the
    servers under test; what the rest of the machine used is `busy_cores - own_cores`."""
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs0 = proc_cpu()
    busy0, total0 = cpu_times()
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.monotonic() - start
    busy1, total1 = cpu_times()
    procs1 = proc_cpu()
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()}")
    parsed = parse_wrk(proc.stdout)
    cpu = (after_children.ru_utime - before_children.ru_utime) + (after_children.ru_stime - before_children.ru_stime)
    idle = 1 - (busy1 - busy0) / max(total1 - total0, 1)
    cores = os.cpu_count() or 1
    mine = {os.getpid(), *own}  # this process's reaped-children time is wrk's
    own_cpu = sum(cpu - procs0.get(pid, ("", 0.0))[1] for pid, (_name, cpu) in procs1.items() if pid in mine)
    return Measured(requests=int(parsed["requests"]), seconds=parsed["seconds"], rps=parsed["rps"],
                    p50_ms=parsed["p50_ms"], p99_ms=parsed["p99_ms"], errors=int(parsed["errors"]),
                    client_cpu=round(cpu / wall, 3), host_idle=round(idle, 3),
                    cpu_by=cpu_by_name(procs0, procs1, wall), busy_cores=round((1 - idle) * cores, 2),
                    own_cores=round(own_cpu / wall, 2))

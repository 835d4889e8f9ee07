"""Per-route traffic through the real agent on loopback (the harness of tests/unit/test_agent.py): a
known number of requests of a known status mix goes through nginx, and the file the control server
serves at /swarmgate/v3/traffic counts each of them once, with nothing lost across a reload that
leaves a slow request to an old worker, across a killed aggregator and while one hangs.

The pushed configs carry the traffic log exactly as swarmgate renders it (its `log_format` line and
its `access_log` parameters, taken from a render), written into this test's directory; the front
server sets `$swarmgate_route` as a rendered location does. A second, unbuffered log of the same
requests gives the bytes each one really sent and received. The backend is a Python server (one
path answers after a delay), so a request can be kept in flight across a reload.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarmgate.models.routing.routes import build_route_table
from swarmgate.models.settings.extension import Extension
from swarmgate.models.swarm.observed import ObservedState
from swarmgate.renderers.nginx import render_nginx
from tests.support import free_port, wait_for
from tests.unit import test_agent as harness
from tests.unit.test_agent import Proxy

pytestmark = harness.pytestmark
_stop_signals_not_ignored = harness._stop_signals_not_ignored
workdir = harness.workdir
TRAFFIC_PATH = "/swarmgate/v3/traffic"
SLOW_SECONDS = 2.0
MAWK = Path("/usr/bin/mawk")


def rendered_traffic_log(directory: Path) -> tuple[str, str]:
    """The `log_format` and `access_log` lines swarmgate renders for the traffic log, the log pointed
    at `directory`."""
    ext = Extension.model_validate({"PublishMode": "host"})
    table = build_route_table(ObservedState.from_api(services=[], tasks=[], nodes=[]), ext)
    text = render_nginx(ext, table, server_info="swarmgate/0.1.0 linux/amd64", traffic_dir=str(directory)).text
    fmt = re.search(r"^ *(log_format swarmgate_traffic .*;)$", text, re.M)
    log = re.search(r"^ *(access_log \S+/traffic\.log swarmgate_traffic .*;)$", text, re.M)
    assert fmt is not None and log is not None
    return fmt.group(1), log.group(1)


class Backend(http.server.BaseHTTPRequestHandler):
    """200 `ok`, 404 for /missing, and 200 after SLOW_SECONDS for /slow."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        code = 404 if self.path == "/missing" else 200
        body = b"ok\n" if code == 200 else b"missing\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@dataclass
class Site:
    """The front server's port, the backend's, a port nobody listens on, and the proxy."""

    proxy: Proxy
    front: int
    backend: int
    closed: int
    traffic_dir: Path

    def extra(self, version: str) -> str:
        fmt, log = rendered_traffic_log(self.traffic_dir)
        up = f"127.0.0.1:{self.backend}"
        return (f"\n  {fmt}\n  log_format check '$bytes_sent $request_length $status';\n"
                f"  server {{ listen 127.0.0.1:{self.front}; {log} access_log {self.proxy.tmp}/check.log check;\n"
                f'    set $swarmgate_route "demo.local/"; add_header x-version {version};\n'
                f"    location / {{ proxy_pass http://{up}; }}\n"
                f'    location = /down {{ set $swarmgate_route "demo.local/down"; '
                f"proxy_pass http://127.0.0.1:{self.closed}; }}\n"
                f'    location = /nginx {{ set $swarmgate_route "-"; return 503; }}\n  }}\n')

    def push(self, version: str, seq: int) -> None:
        self.proxy.push(version, term=1, seq=seq, extra=self.extra(version))
        assert self.proxy.get() == (200, version)

    def get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.front}{path}", timeout=10) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as err:
            err.read()
            return int(err.code)

    def mix(self, n: int) -> Counter[tuple[str, str, str]]:
        """n rounds of: 3 x 200, 404 from the backend, 502 (no upstream listening), 503 from nginx;
        the expected (key, upstream, class) counts."""
        up, down = f"127.0.0.1:{self.backend}", f"127.0.0.1:{self.closed}"
        want: Counter[tuple[str, str, str]] = Counter()
        for _ in range(n):
            for path, key, upstream, code in (("/", "demo.local/", up, 200), ("/a", "demo.local/", up, 200),
                                              ("/b", "demo.local/", up, 200),
                                              ("/missing", "demo.local/", up, 404),
                                              ("/down", "demo.local/down", down, 502), ("/nginx", "-", "-", 503)):
                assert self.get(path) == code
                want[(key, upstream, f"{code // 100}xx")] += 1
        return want


@dataclass(frozen=True)
class Traffic:
    """The served file, parsed: its header and its lines by (key, upstream, class or kind)."""

    task: str
    epoch: str
    counts: dict[tuple[str, str, str], tuple[int, int, int]]
    histograms: dict[tuple[str, str, str], tuple[list[int], float]]
    lines: list[str]

    @classmethod
    def parse(cls, body: bytes) -> Traffic:
        header, *lines = body.decode().splitlines()
        proto, kind, task, epoch, uptime = header.split(" ")
        assert (proto, kind) == ("swarmgate/3", "traffic") and float(uptime) > 0
        counts, histograms = {}, {}
        for line in lines:
            f = line.split(" ")
            if f[0] == "c":
                assert len(f) == 7 and f[3] in ("1xx", "2xx", "3xx", "4xx", "5xx"), line
                counts[(f[1], f[2], f[3])] = (int(f[4]), int(f[5]), int(f[6]))
            else:
                assert f[0] == "h" and len(f) == 17 and f[3] in ("request", "upstream"), line
                histograms[(f[1], f[2], f[3])] = ([int(b) for b in f[4:16]], float(f[16]))
        assert lines == sorted(lines)
        return cls(task, epoch, counts, histograms, lines)

    def requests(self) -> Counter[tuple[str, str, str]]:
        return Counter({k: v[0] for k, v in self.counts.items()})


def served(proxy: Proxy) -> Traffic:
    code, body = proxy.control("GET", TRAFFIC_PATH)
    assert code == 200, body
    return Traffic.parse(body)


def counted(proxy: Proxy, want: Counter[tuple[str, str, str]]) -> Traffic:
    """The served file once it counts `want` (it may count more only by failing the test)."""
    return wait_for(lambda: next((t for t in (served(proxy),) if t.requests() == want), None), timeout=15,
                    interval=0.2, what=f"the traffic file to count {dict(want)}")


def check_consistent(traffic: Traffic, check_log: Path) -> None:
    """Histograms count what the counters count; bytes are what nginx logged for the same requests."""
    for (key, upstream, kind), (buckets, total) in traffic.histograms.items():
        n = sum(v[0] for (k, u, _), v in traffic.counts.items() if (k, u) == (key, upstream))
        assert sum(buckets) == n and total >= 0, (key, upstream, kind)
        assert kind == "request" or upstream != "-"
    sent = received = 0
    for line in check_log.read_text().splitlines():
        s, r, _ = line.split(" ")
        sent, received = sent + int(s), received + int(r)
    assert (sum(v[1] for v in traffic.counts.values()), sum(v[2] for v in traffic.counts.values())) == (sent, received)


def tools(proxy: Proxy, awk: str) -> None:
    """The proxy image's PATH: busybox's applets and nginx, and mawk when `awk` says so (the agent
    takes it over busybox's awk)."""
    bin_dir = proxy.tmp / "bin"
    bin_dir.mkdir()
    for applet in subprocess.run([str(harness.BUSYBOX), "--list"], capture_output=True, text=True,
                                 check=True).stdout.split():
        (bin_dir / applet).symlink_to(harness.BUSYBOX)
    (bin_dir / proxy.nginx_name).symlink_to(harness.NGINX)
    if awk == "mawk":
        (bin_dir / "mawk").symlink_to(MAWK)


@pytest.fixture
def site(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    awk = getattr(request, "param", "busybox")
    if awk == "mawk" and not MAWK.exists():
        pytest.skip("needs mawk")
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    traffic_dir = workdir / "traffic"
    proxy = Proxy(workdir, free_port(), free_port(),
                  env={"SWARMGATE_TRAFFIC_DIR": str(traffic_dir), "SWARMGATE_TRAFFIC_TICK": "0.5"})
    tools(proxy, awk)
    try:
        harness.start(proxy)
        took = f", {'mawk' if awk == 'mawk' else 'awk'}, every "  # the awk the agent took
        wait_for(lambda: took in proxy.log() or None, timeout=10, what="the aggregator to start")
        yield Site(proxy, free_port(), backend.server_address[1], free_port(), traffic_dir)
    finally:
        proxy.kill()
        backend.shutdown()
        backend.server_close()


@pytest.mark.parametrize("site", ["busybox", "mawk"], indirect=True)
def test_every_request_is_counted_once_across_a_reload_with_a_slow_request_in_flight(site: Site) -> None:
    proxy = site.proxy
    empty = served(proxy)
    assert (empty.task, empty.lines) == (proxy.task, [])  # the header alone
    site.push("one", 1)
    want = site.mix(5)
    first = counted(proxy, want)
    assert first.epoch == empty.epoch
    check_consistent(first, proxy.tmp / "check.log")

    # A request the old worker still serves when the reload comes; it ends after the reload.
    slow: list[int] = []
    thread = threading.Thread(target=lambda: slow.append(site.get("/slow")))
    thread.start()
    time.sleep(0.3)
    site.push("two", 2)
    want += site.mix(3)
    thread.join()
    assert slow == [200]
    want[("demo.local/", f"127.0.0.1:{site.backend}", "2xx")] += 1
    after = counted(proxy, want)
    check_consistent(after, proxy.tmp / "check.log")
    slow_bucket = after.histograms[("demo.local/", f"127.0.0.1:{site.backend}", "upstream")][0]
    assert sum(slow_bucket[8:]) == 1  # the one request that took 2 s upstream: the 2.5 s bucket
    time.sleep(2)  # counted once: nothing comes in later
    assert served(proxy).requests() == want


def aggregator_pid(proxy: Proxy) -> int:
    pids = re.findall(r"traffic aggregator (?:started \(pid|had died: started again \(pid) (\d+)", proxy.log())
    return int(pids[-1])


def another_aggregator(proxy: Proxy, killed: int) -> bool | None:
    return aggregator_pid(proxy) != killed or None


def test_a_killed_or_hung_aggregator_blocks_nothing_and_loses_nothing(site: Site) -> None:
    proxy = site.proxy
    site.push("one", 1)
    want = site.mix(3)
    epoch = counted(proxy, want).epoch

    # Hung: nginx serves and reloads all the same; the log waits for it.
    pid = aggregator_pid(proxy)
    os.kill(pid, signal.SIGSTOP)
    try:
        want += site.mix(3)
        site.push("two", 2)
        want += site.mix(2)
        time.sleep(1)
        assert served(proxy).requests() != want
    finally:
        os.kill(pid, signal.SIGCONT)
    counted(proxy, want)

    # Killed, again and again: the agent starts another, which counts from where the first stopped.
    for _ in range(3):
        pid = aggregator_pid(proxy)
        want += site.mix(2)
        os.kill(pid, signal.SIGKILL)
        want += site.mix(2)
        wait_for(functools.partial(another_aggregator, proxy, pid), timeout=10, what="the agent to start another")
    last = counted(proxy, want)
    assert last.epoch == epoch  # the counters did not start over
    check_consistent(last, proxy.tmp / "check.log")

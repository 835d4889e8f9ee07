"""The traffic file a proxy task's agent serves at `GET /swarmgate/v3/traffic` (pure parser).

The agent aggregates nginx's traffic log into cumulative counters and replaces the file whole:

    swarmgate/3 traffic TASK EPOCH UPTIME
    c KEY UPSTREAM CLASS REQUESTS BYTES_SENT BYTES_RECEIVED
    h KEY UPSTREAM KIND B0 B1 ... B11 SUM

EPOCH changes whenever the counters start again from zero; UPTIME is the node's /proc/uptime when
the file was written (the difference of two files' UPTIME is the time their counts cover). KEY is the
route's (`models/routing/traffic_key.py`), UPSTREAM the last address nginx tried (`-`: none), CLASS
`1xx`..`5xx`, KIND `request` or `upstream`; B0..B11 count the times per bucket (not cumulative) with
the upper bounds `BUCKETS` and +Inf; SUM is their total in seconds.

A file is believed whole or not at all: one malformed line refuses it with a one-line reason
(`TrafficFileError`), so a torn or foreign file is never half counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PROTOCOL = "swarmgate/3"
TRAFFIC_PATH = "/swarmgate/v3/traffic"
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
KINDS = ("request", "upstream")
# Upper bounds (seconds) of B0..B10; B11 is +Inf. Prometheus's default buckets and 2.5 s more.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TASK = re.compile(r"[A-Za-z0-9]{1,64}")
_TOKEN = re.compile(r"[!-~]{1,512}")  # printable ASCII, no whitespace: a KEY, UPSTREAM or EPOCH
_COUNT = re.compile(r"0|[1-9][0-9]{0,17}")
_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_REASON_TEXT = 60  # how much of an offending line a reason quotes
# A whole well-formed line at once (a file has four lines per route: at 10,000 routes, per-token checks
# cost seconds); a line that does not match is checked again by `_line`, which says what is wrong.
_N = r"(?:0|[1-9][0-9]{0,17})"
_C_LINE = re.compile(rf"c ([!-~]{{1,512}}) ([!-~]{{1,512}}) ([1-5]xx) ({_N}) ({_N}) ({_N})")
_H_LINE = re.compile(rf"h ([!-~]{{1,512}}) ([!-~]{{1,512}}) (request|upstream) ((?:{_N} ){{12}})"
                     r"([0-9]{1,12}(?:\.[0-9]{1,9})?)")

Kind = Literal["request", "upstream"]


class TrafficFileError(ValueError):
    """The file is not a traffic file this operator understands; the message says where, in one line."""


@dataclass(frozen=True)
class CountLine:
    key: str
    upstream: str
    code: str  # the status class: 1xx .. 5xx
    requests: int
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class HistogramLine:
    key: str
    upstream: str
    kind: Kind
    buckets: tuple[int, ...]  # per bucket, not cumulative: len(BUCKETS) + 1 (the last is +Inf)
    total: float  # the sum of the times, seconds

    @property
    def count(self) -> int:
        return sum(self.buckets)


@dataclass(frozen=True)
class TrafficFile:
    task: str
    epoch: str
    uptime: float
    counts: tuple[CountLine, ...] = ()
    histograms: tuple[HistogramLine, ...] = ()


def parse_traffic(text: str) -> TrafficFile:
    """The file's counters; `TrafficFileError` naming the first line that is wrong."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise TrafficFileError("empty: no header line")
    task, epoch, uptime = _header(lines[0])
    counts: list[CountLine] = []
    histograms: list[HistogramLine] = []
    seen: set[tuple[str, str, str, str]] = set()
    for number, line in enumerate(lines[1:], start=2):
        parsed: CountLine | HistogramLine
        if (c := _C_LINE.fullmatch(line)) is not None:
            key, upstream, code, requests, sent, received = c.groups()
            parsed = CountLine(key, upstream, code, int(requests), int(sent), int(received))
            ident = ("c", key, upstream, code)
        elif (h := _H_LINE.fullmatch(line)) is not None:
            key, upstream, kind, buckets, total = h.groups()
            parsed = HistogramLine(key, upstream, "request" if kind == "request" else "upstream",
                                   tuple(int(b) for b in buckets.split()), float(total))
            ident = ("h", key, upstream, kind)
        else:
            try:
                _line(line)
                reason = "not a traffic line"  # what the whole-line patterns refuse and `_line` misses
            except TrafficFileError as exc:
                reason = str(exc)
            raise TrafficFileError(f"line {number}: {reason}: {_quote(line)}")
        if ident in seen:
            raise TrafficFileError(f"line {number}: a second line for the same counters: {_quote(line)}")
        seen.add(ident)
        if isinstance(parsed, CountLine):
            counts.append(parsed)
        else:
            histograms.append(parsed)
    return TrafficFile(task, epoch, uptime, tuple(counts), tuple(histograms))


def _header(line: str) -> tuple[str, str, float]:
    fields = line.split(" ")
    if len(fields) != 5 or fields[0] != PROTOCOL or fields[1] != "traffic":
        raise TrafficFileError(f"line 1: not a {PROTOCOL} traffic header: {_quote(line)}")
    _, _, task, epoch, uptime = fields
    if not _TASK.fullmatch(task) or not _TOKEN.fullmatch(epoch) or not _SECONDS.fullmatch(uptime):
        raise TrafficFileError(f"line 1: bad task, epoch or uptime: {_quote(line)}")
    return task, epoch, float(uptime)


def _line(line: str) -> CountLine | HistogramLine:
    fields = line.split(" ")
    if fields[0] == "c" and len(fields) == 7:
        _, key, upstream, code, *numbers = fields
        _tokens(key, upstream)
        if code not in CLASSES:
            raise TrafficFileError(f"unknown status class {code[:8]!r}")
        requests, sent, received = _counts(numbers)
        return CountLine(key, upstream, code, requests, sent, received)
    if fields[0] == "h" and len(fields) == 5 + len(BUCKETS) + 1:
        _, key, upstream, kind, *rest = fields
        _tokens(key, upstream)
        if kind == "request":
            kind_: Kind = "request"
        elif kind == "upstream":
            kind_ = "upstream"
        else:
            raise TrafficFileError(f"unknown histogram kind {kind[:10]!r}")
        if not _SECONDS.fullmatch(rest[-1]):
            raise TrafficFileError("the sum is not a number of seconds")
        return HistogramLine(key, upstream, kind_, _counts(rest[:-1]), float(rest[-1]))
    raise TrafficFileError("neither a `c` line of 7 fields nor an `h` line of 17")


def _tokens(*tokens: str) -> None:
    if not all(_TOKEN.fullmatch(t) for t in tokens):
        raise TrafficFileError("a key or upstream that is empty, too long or not printable ASCII")


def _counts(fields: list[str]) -> tuple[int, ...]:
    if not all(_COUNT.fullmatch(f) for f in fields):
        raise TrafficFileError("a count that is not a whole number")
    return tuple(int(f) for f in fields)


def _quote(line: str) -> str:
    shown = line[:_REASON_TEXT].encode("ascii", "backslashreplace").decode()
    return repr(shown) + ("..." if len(line) > _REASON_TEXT else "")

"""`tcpdump` in a lab node's network namespace, and the TCP streams of what it caught (I/O).

Only what the channel test needs: Ethernet + IPv4 + TCP from a classic pcap file, each connection's
client-to-server bytes in sequence order (retransmissions counted once).
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

LINKTYPE_ETHERNET = 1


@dataclass
class Stream:
    """One direction of one TCP connection."""

    src: tuple[str, int]
    dst: tuple[str, int]
    segments: dict[int, bytes] = field(default_factory=dict)  # sequence number -> payload

    @property
    def data(self) -> bytes:
        return b"".join(payload for _, payload in sorted(self.segments.items()))


@contextmanager
def tcpdump(netns: str, interface: str, port: int, out: Path) -> Iterator[Path]:
    """Capture TCP to and from `port` on `interface` inside `netns` until the block ends."""
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", "tcpdump", "-i", interface, "-U", "-s", "0", "-w", str(out),
         f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()  # "listening on ...": the capture is running
        assert "listening" in line, line
        yield out
    finally:
        time.sleep(0.5)  # the last segments of the exchange
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)


def streams(pcap: Path) -> list[Stream]:
    raw = pcap.read_bytes()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    (linktype,) = struct.unpack(endian + "I", raw[20:24])
    assert linktype == LINKTYPE_ETHERNET, f"link type {linktype}"
    found: dict[tuple[tuple[str, int], tuple[str, int]], Stream] = {}
    offset = 24
    while offset + 16 <= len(raw):
        _, _, caplen, _ = struct.unpack(endian + "IIII", raw[offset:offset + 16])
        frame = raw[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue  # not IPv4
        ip = frame[14:]
        if ip[9] != 6:
            continue  # not TCP
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        src_ip, dst_ip = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        tcp = ip[ihl:total]
        src_port, dst_port, seq = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if not payload:
            continue
        key = ((src_ip, src_port), (dst_ip, dst_port))
        found.setdefault(key, Stream(*key)).segments.setdefault(seq, payload)
    return list(found.values())

"""A minimal websocket client (RFC 6455) for lab tests: one raw socket, the upgrade, masked frames.

Like `tests.lab.http`, it only talks to lab nodes (through the lab bridge) or loopback. It does what a
browser does and no more: a GET with `Upgrade: websocket` and a random key, the 101 checked against
the key, then masked client frames and the server's unmasked ones.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
from dataclasses import dataclass, field

from tests.lab.http import assert_lab_route

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def accept_for(key: str) -> str:
    """The `Sec-WebSocket-Accept` a server must answer to `key`."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


class HandshakeRefused(AssertionError):
    def __init__(self, status: int, head: str) -> None:
        super().__init__(f"websocket upgrade answered {status}: {head!r}")
        self.status = status
        self.head = head


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    masked: bool
    payload: bytes


@dataclass
class WebSocket:
    sock: socket.socket
    status: int
    headers: dict[str, str]
    _pending: bytearray = field(default_factory=bytearray)

    def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """One client frame, masked with a fresh random key (clients must mask)."""
        mask = os.urandom(4)
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n <= 0xFFFF:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed with {len(self._pending)} of {n} bytes read")
            self._pending += chunk
        out = bytes(self._pending[:n])
        del self._pending[:n]
        return out

    def receive(self) -> Frame:
        """The next frame from the server, as sent (the payload unmasked if it was masked)."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if b1 & 0x80 else b""
        payload = self._read(n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return Frame(fin=bool(b0 & 0x80), opcode=b0 & 0x0F, masked=bool(b1 & 0x80), payload=payload)

    def close(self, code: int = 1000) -> Frame:
        """Send a close frame and return the server's answering frame."""
        self.send(CLOSE, struct.pack("!H", code))
        return self.receive()

    def shut(self) -> None:
        self.sock.close()


def connect(address: str, path: str, *, host: str, port: int = 80, timeout: float = 5.0) -> WebSocket:
    """Open a websocket; raises `HandshakeRefused` unless the answer is a 101 with the right accept."""
    assert_lab_route(address)
    key = base64.b64encode(os.urandom(16)).decode()
    sock = socket.create_connection((address, port), timeout=timeout)
    try:
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the handshake after {received!r}")
            received += chunk
        head, rest = received.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            raise HandshakeRefused(status, head.decode("latin-1"))
        if headers.get("sec-websocket-accept") != accept_for(key):
            raise AssertionError(f"Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r} is not "
                                 f"{accept_for(key)!r} for key {key!r}")
        if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("connection", "").lower():
            raise AssertionError(f"101 without Upgrade/Connection headers: {headers}")
        return WebSocket(sock, status, headers, bytearray(rest))
    except BaseException:
        sock.close()
        raise

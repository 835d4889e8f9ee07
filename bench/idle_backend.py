"""A backend that closes idle keep-alive connections at its own timeout, as Node's http server does
(5 s), gunicorn's async workers (2 s) or uvicorn (5 s): the other side of the upstream keep-alive race.

An HTTP/1.1 server on 127.0.0.1 (asyncio, one process): it answers every request `200 ok`, reading a
`Content-Length` body first, and keeps the connection open. `--idle` seconds after it wrote its last
response it stops serving the connection, and its FIN follows `--fin-delay` seconds later:

* `--fin-delay 0`: the FIN leaves at once, as from a server on the same machine;
* a few milliseconds: as seen across a network, where the proxy learns of the close a one-way trip
  later and may send a request meanwhile;
* `--fin-delay never`: the FIN is never sent, the worst case: only the proxy's own idle timeout
  protects it.

A request that arrives on a connection it stopped serving is refused with a reset, as the kernel
does to data for a closed socket. At SIGTERM it writes `{"served": N, "refused": N, "connections": N}`
to `--counts` (or stdout).

    python bench/idle_backend.py --port 8081 --idle 5 [--fin-delay 0.002] [--counts FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import struct
import sys
from pathlib import Path

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
COUNTS = {"served": 0, "refused": 0, "connections": 0}


class IdleClosing(asyncio.Protocol):
    def __init__(self, idle: float, fin_delay: float | None) -> None:
        self.idle, self.fin_delay = idle, fin_delay
        self.buffer = b""
        self.stopped = False
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        COUNTS["connections"] += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.stopped:  # the client sent on a connection this server has given up: reset it
            COUNTS["refused"] += 1
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.transport.write(RESPONSE)
            COUNTS["served"] += 1
            if not self.buffer:
                self.timer = asyncio.get_running_loop().call_later(self.idle, self.expire)

    def expire(self) -> None:
        assert self.transport is not None
        self.stopped = True
        if self.fin_delay is None:
            return
        if self.fin_delay == 0:
            self.transport.close()
        else:
            asyncio.get_running_loop().call_later(self.fin_delay, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def serve(port: int, idle: float, fin_delay: float | None, counts: str | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: IdleClosing(idle, fin_delay), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    if counts:
        Path(counts).write_text(json.dumps(COUNTS) + "\n")
    else:
        print(json.dumps(COUNTS), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=float, required=True, help="seconds a connection may idle")
    parser.add_argument("--fin-delay", default="0", help="seconds until the FIN leaves, or 'never'")
    parser.add_argument("--counts", help="a file to write the counts to at exit")
    args = parser.parse_args(argv)
    fin_delay = None if args.fin_delay == "never" else float(args.fin_delay)
    asyncio.run(serve(args.port, args.idle, fin_delay, args.counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

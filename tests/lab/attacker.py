"""What an attacker does to a proxy's control server, runnable from any lab namespace (network I/O).

`python -m tests.lab.attacker ACTION ADDRESS PORT [ARG]` prints one JSON line: what came back. Run
from the host, or inside a worker's network namespace (`nsenter --net=/run/netns/sglab-wrk-0`), so
the tests can forge from where an attacker in the cluster would stand. Targets must be lab addresses
(198.18.0.0/15, the benchmarking range the lab uses) or loopback: test traffic never leaves the lab.

Actions:
- `bearer` PUT a config over plain HTTP (the swarmgate/2 way) with `Authorization: Bearer ARG`
- `tls-anonymous` TLS with SNI swarmgate-control.invalid, no client certificate, then GET status
- `tls-own-cert` the same, presenting a self-made certificate for that name, then PUT a config
- `raw` send the bytes of the hex file ARG on a new TCP connection (a replayed capture)
- `push-with-key` with the key file ARG (a leaked key), PUT the config in env ATTACK_CONFIG with
  env ATTACK_TASK / ATTACK_TERM / ATTACK_SEQ (ATTACK_NO_VERIFY=1: accept any server certificate)
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from swarmgate.operator.delivery import wire
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.renderers.nginx import CONTROL_HOST

LAB_RANGE = ipaddress.ip_network("198.18.0.0/15")
PWNED_CONFIG = 'events {}\nhttp {\n    server {\n        listen 80;\n        return 200 "PWNED\\n";\n    }\n}\n'


def _check_target(address: str) -> None:
    ip = ipaddress.ip_address(address)
    if not (ip.is_loopback or ip in LAB_RANGE):
        raise SystemExit(f"refusing to send test traffic to {address}: not a lab address")


class _Tls(http.client.HTTPSConnection):
    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=CONTROL_HOST)  # type: ignore[attr-defined]


def _unverified(cert_chain: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # an attacker takes whatever certificate the proxy shows
    if cert_chain is not None:
        context.load_cert_chain(cert_chain)
    return context


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> dict[str, Any]:
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return {"status": response.status, "body": response.read(4096).decode("utf-8", "replace")}
    except (OSError, http.client.HTTPException) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()


def bearer(address: str, port: int, value: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection(address, port, timeout=5)
    body = f"swarmgate/2 config {hashlib.sha256(PWNED_CONFIG.encode()).hexdigest()}\n{PWNED_CONFIG}".encode()
    return _request(conn, "PUT", "/swarmgate/v2/config", body,
                    {"Host": CONTROL_HOST, "Authorization": f"Bearer {value}"})


def tls_anonymous(address: str, port: int) -> dict[str, Any]:
    conn = _Tls(address, port, timeout=5, context=_unverified())
    return _request(conn, "GET", wire.STATUS_PATH, None, {"Host": CONTROL_HOST})


def tls_own_cert(address: str, port: int, workdir: str) -> dict[str, Any]:
    own = ChannelKey.generate()  # a certificate for the control name, of the attacker's making
    pem = Path(workdir) / "attacker.pem"
    pem.write_text(own.cert_pem + own.key_pem)
    conn = _Tls(address, port, timeout=5, context=_unverified(str(pem)))
    body = wire.push_body(own, task="any", term=10**17, seq=1,
                          digest=hashlib.sha256(PWNED_CONFIG.encode()).hexdigest(), text=PWNED_CONFIG)
    return _request(conn, "PUT", wire.CONFIG_PATH, body, {"Host": CONTROL_HOST})


def raw(address: str, port: int, hex_file: str) -> dict[str, Any]:
    data = bytes.fromhex(Path(hex_file).read_text())
    answer = b""
    try:
        with socket.create_connection((address, port), timeout=3) as sock:
            sock.sendall(data)
            sock.settimeout(2)
            while len(answer) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "answer_hex": answer.hex()}
    return {"answer_hex": answer.hex()}


def push_with_key(address: str, port: int, key_file: str) -> dict[str, Any]:
    key = ChannelKey.read(Path(key_file))
    text = os.environ["ATTACK_CONFIG"]
    body = wire.push_body(key, task=os.environ["ATTACK_TASK"], term=int(os.environ["ATTACK_TERM"]),
                          seq=int(os.environ["ATTACK_SEQ"]), digest=hashlib.sha256(text.encode()).hexdigest(),
                          text=text)
    if os.environ.get("ATTACK_NO_VERIFY") == "1":
        # Whatever certificate the proxy shows now, present the key's own.
        pem = Path(key_file).with_suffix(".pem")
        pem.write_text(key.cert_pem + key.key_pem)
        context = _unverified(str(pem))
    else:
        context = key.client_context()
    conn = _Tls(address, port, timeout=5, context=context)
    return _request(conn, "PUT", wire.CONFIG_PATH, body, {"Host": CONTROL_HOST})


def main(argv: list[str]) -> int:
    action, address, port = argv[0], argv[1], int(argv[2])
    _check_target(address)
    arg = argv[3] if len(argv) > 3 else ""
    actions = {"bearer": lambda: bearer(address, port, arg), "tls-anonymous": lambda: tls_anonymous(address, port),
               "tls-own-cert": lambda: tls_own_cert(address, port, arg), "raw": lambda: raw(address, port, arg),
               "push-with-key": lambda: push_with_key(address, port, arg)}
    print(json.dumps(actions[action]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

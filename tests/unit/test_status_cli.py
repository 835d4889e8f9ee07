"""`swarmgate status --endpoint`: the operator's own document, as its /v1/status says it.

A small HTTP server on loopback stands in for an operator's endpoint (this is the CLI's HTTP client
under test, not Docker): one that serves the whole document, and one from before the status page,
whose election facts are only at /v1/leader.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from swarmgate.operator.cli.main import main

CONFIG = Path(__file__).resolve().parents[2] / "docs" / "examples" / "interlock.toml"
LEADER = {"role": "leader", "identity": "op-a", "holder": "op-a", "reason": "holds the lease"}
FULL_OPERATOR = {**LEADER, "ready": True, "docker_reachable": True}


@contextmanager
def endpoint(pages: dict[str, dict[str, Any]]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            body = json.dumps(page).encode() if page is not None else b"{}"
            self.send_response(200 if page is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _status_json(url: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", "-c", str(CONFIG), "--endpoint", url, "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_status_keeps_the_operator_document_of_v1_status(capsys: pytest.CaptureFixture[str]) -> None:
    pages: dict[str, dict[str, Any]] = {"/v1/status": {"clusters": {}, "operator": FULL_OPERATOR},
                                       "/v1/leader": LEADER}
    with endpoint(pages) as url:
        assert _status_json(url, capsys)["operator"] == FULL_OPERATOR


def test_status_of_an_operator_without_it_falls_back_to_v1_leader(capsys: pytest.CaptureFixture[str]) -> None:
    with endpoint({"/v1/status": {"clusters": {}}, "/v1/leader": LEADER}) as url:
        assert _status_json(url, capsys)["operator"] == LEADER

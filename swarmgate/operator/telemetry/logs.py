"""Log set-up: one structured line per event, as `key=value` text or JSON for log shippers (I/O).

Fields travel in `extra=`; the formatter prints whatever the call site attached, sorted, so a line
is greppable by `reconcile_id=` or `service=`. No call site passes key material: the channel
key stays in `delivery/channel_key.py` and the files the operator and the agent read it from.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in sorted(record.__dict__.items()) if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={_quote(v)}" for k, v in _fields(record).items())
        line = f"{_timestamp(record)} {record.levelname.lower():5} {record.getMessage()}"
        return f"{line} {pairs}" if pairs else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage(), **_fields(record)}
        return json.dumps(doc, default=str, sort_keys=False)


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' ="')) else text


def configure(*, debug: bool, json_format: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # The docker SDK and urllib3 are chatty at debug level and could print request bodies.
    for noisy in ("urllib3", "docker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

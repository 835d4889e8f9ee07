"""Reading a file the user named (config or state file): the one read the pure core does.

Every failure is a one-line `ConfigError` naming the file, never a traceback and never a hang:

* only a regular file is read. The path is checked with `stat` before it is opened, and opened
  with `O_NONBLOCK`, so a FIFO that appears in between cannot block the open either; the opened
  descriptor is checked again (`fstat`), so what is read is what was checked.
* at most `MAX_USER_FILE_BYTES` are read (`/dev/zero` is not a regular file, and a huge regular
  file is refused by its size before a byte of it is read).
* the text must be UTF-8.

`parse_user_text` wraps a parser so that whatever it raises on hostile text (RecursionError on deep
nesting, MemoryError, any other exception) also becomes one line.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from swarmgate.errors import ConfigError, SwarmgateError

# A config is a few KiB and a state file of 1000 services about 5 MiB: 64 MiB is far beyond both.
MAX_USER_FILE_BYTES = 64 * 1024 * 1024

T = TypeVar("T")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _regular(path: str | Path, mode: int, size: int, limit: int) -> None:
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{path}: cannot read: {_kind(mode)}, not a regular file")
    if size > limit:
        raise ConfigError(f"{path}: cannot read: {size} bytes, more than the {limit} allowed")


def read_user_file(path: str | Path, *, limit: int = MAX_USER_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most `limit` bytes."""
    try:
        before = os.stat(path)
        _regular(path, before.st_mode, before.st_size, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
        _regular(path, opened.st_mode, opened.st_size, limit)
        chunks: list[bytes] = []
        total = 0
        while True:
            # A regular file never blocks; read one byte past the limit to see a file that grew.
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise ConfigError(f"{path}: cannot read: more than the {limit} bytes allowed")
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            raise ConfigError(f"{path}: cannot read: not a regular file") from None
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def parse_user_text(parse: Callable[[], T], *, source: str, what: str) -> T:
    """`parse()`, with every failure turned into one `ConfigError` line naming `source`.

    The parsers (tomllib, json, pydantic) raise their own errors, which the callers translate; this
    is the net under them for what hostile text provokes: `[[[[...` ten thousand deep recurses past
    Python's limit, and a pathological document can exhaust memory.
    """
    try:
        return parse()
    except SwarmgateError:
        raise
    except RecursionError:
        raise ConfigError(f"{source}: invalid {what}: nested too deeply") from None
    except MemoryError:
        raise ConfigError(f"{source}: invalid {what}: too large to parse") from None
    except Exception as exc:  # any other parser failure on user text is the text's fault, said in one line
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{source}: invalid {what}: {type(exc).__name__}: {detail}") from None

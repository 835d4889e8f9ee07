"""Reading a file the user named (config or state file): the one read the pure core does.

Every failure is a one-line `ConfigError` naming the file, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from swarmgate.errors import ConfigError


def read_user_file(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None

"""Exit codes, and the one place that turns swarmgate's errors into them (writes to stderr).

Every command, live or offline, ends through `guarded`: a `SwarmgateError` becomes one line on
stderr and exit 2, so a user mistake never shows a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TextIO

from swarmgate.errors import SwarmgateError

EXIT_OK = 0
EXIT_PENDING = 1  # `plan`: changes pending; `status`: not every proxy current
EXIT_ERROR = 2


def guarded(body: Callable[[], int | None], err: TextIO) -> int:
    """Run a command body: its exit code (None means 0), or 2 with one line on `err`."""
    try:
        code = body()
    except SwarmgateError as exc:
        print(f"swarmgate: {exc}", file=err)
        return EXIT_ERROR
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a bug or an exhausted resource: still one line; the traceback only with -D
        logging.getLogger("swarmgate").debug("unexpected error", exc_info=True)
        detail = " ".join(str(exc).split())[:300]
        print(f"swarmgate: unexpected error: {type(exc).__name__}: {detail}", file=err)
        return EXIT_ERROR
    return EXIT_OK if code is None else code

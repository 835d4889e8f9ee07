"""The default templates' compiled code, kept between processes (I/O: one per-user cache directory).

Compiling `nginx.conf.j2` and `policy.j2` takes about 0.1 s of CPU, paid by every process that
renders: each `swarmgate render`, `routes`, `plan` and `status`, and each operator start. jinja2's
bytecode cache keeps the compiled code, keyed by the template's name and checked against the sha1 of
its source and the Python version, so a changed template is compiled again. It lives in jinja2's
per-user directory under the system temp directory (`_jinja2-cache-<uid>`, created 0700 and refused
when another user owns it, as jinja2 does by default). A cache that cannot be read or written (a
read-only or full file system, a damaged file) is no error: the template is compiled as without it.
Only the package's own templates use it; a custom template (a Swarm config's text) is compiled in
the sandbox each time.
"""

from __future__ import annotations

import contextlib

import jinja2
from jinja2.bccache import Bucket


class TemplateCodeCache(jinja2.FileSystemBytecodeCache):
    """jinja2's file-system bytecode cache that never fails a render; its directory is found (and
    created) on first use, not when the renderer is imported."""

    def __init__(self) -> None:
        self.pattern = "__swarmgate_%s.cache"
        self._directory: str | None = None
        self._unusable = False

    def _usable(self) -> bool:
        if self._directory is None and not self._unusable:
            try:
                self._directory = self._get_default_cache_dir()
                self.directory = self._directory
            except (OSError, RuntimeError):
                self._unusable = True
        return not self._unusable

    def load_bytecode(self, bucket: Bucket) -> None:
        if not self._usable():
            return
        try:
            super().load_bytecode(bucket)
        except Exception:  # a damaged or foreign file: compile as without a cache
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        if not self._usable():
            return
        with contextlib.suppress(OSError):  # not writable: the next process compiles again
            super().dump_bytecode(bucket)

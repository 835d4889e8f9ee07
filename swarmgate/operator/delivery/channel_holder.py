"""Which channel key this operator holds, and whether it is the one the proxies trust (file I/O).

An operator gets the key in one of two ways:
- it reads the file at `path` (in a Swarm task: the secret `swarmgate-channel`, mounted into the
  operator's own service; as a plain process: a private file of its own, `--channel-key`);
- it created the secret itself in this process (`adopt`): then it holds the key in memory, and a
  plain process also writes it to `path` (mode 0600) so that it survives a restart. A task cannot
  write its secrets; the next pass mounts the secret into the operator's own service instead (one
  restart of the operator, never of a proxy).

A key is usable only while the snapshot's secret names the same certificate (its label): a key left
over from an earlier Swarm would only be refused by every proxy.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_FINGERPRINT_LABEL, CHANNEL_SECRET_NAME
from swarmgate.operator.delivery.channel_key import ChannelKey, ChannelKeyError

log = logging.getLogger("swarmgate.channel")


class ChannelKeyHolder:
    def __init__(self, path: Path | None, *, writable: bool) -> None:
        self.path = path
        self._writable = writable  # a plain process keeps what it creates; a task's secrets are read-only
        self._lock = threading.Lock()
        self._key: ChannelKey | None = None
        self._trusted: str | None = None  # the certificate digest on the snapshot's secret
        self._said: str = ""
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            self._key = ChannelKey.read(self.path)
        except ChannelKeyError as exc:
            log.warning("the channel key file is unusable", extra={"path": str(self.path), "reason": str(exc)})

    def adopt(self, key: ChannelKey) -> None:
        """A key this process just put into the Swarm's secret."""
        with self._lock:
            self._key = key
            self._trusted = key.fingerprint
        if self._writable and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key.file_text())
            os.replace(tmp, self.path)

    def sync(self, observed: ObservedState) -> None:
        """Learn from a snapshot which certificate the proxies trust; re-read a newly mounted file."""
        secret = next((s for s in observed.secrets if s.name == CHANNEL_SECRET_NAME), None)
        trusted = secret.labels.get(CHANNEL_FINGERPRINT_LABEL) if secret is not None else None
        with self._lock:
            if secret is not None and self._key is None:
                self._load()
            self._trusted = trusted if secret is not None else None
            key = self._key
        state = self._state(key, secret is not None, trusted)
        if state != self._said:
            self._said = state
            if state == "ok":
                log.info("holding the channel key", extra={"certificate": (trusted or "")[:16]})
            elif state:
                log.warning(state)

    @staticmethod
    def _state(key: ChannelKey | None, exists: bool, trusted: str | None) -> str:
        if not exists:
            return ""
        if key is None:
            return (f"the channel key secret {CHANNEL_SECRET_NAME} exists but this operator does not hold it: "
                    "it cannot push to the proxies until its service mounts the secret")
        if trusted is not None and key.fingerprint != trusted:
            return (f"the channel key this operator holds is not the one in {CHANNEL_SECRET_NAME} "
                    "(another certificate): it pushes nothing")
        return "ok"

    def key(self) -> ChannelKey | None:
        """The key to sign and connect with, if the proxies trust it."""
        with self._lock:
            key, trusted = self._key, self._trusted
        if key is None:
            return None
        # A secret without the label (created by hand from `swarmgate channel-key`) is trusted as is.
        return key if trusted is None or key.fingerprint == trusted else None

"""Which channel keys this operator holds, and whether they are the ones the Swarm's secrets name (file I/O).

The channel key has generations. Generation 0 is the secret `swarmgate-channel`, which the proxy
service mounts: every proxy task starts with it. `swarmgate rotate-key` adds a generation N as the
secret `swarmgate-channel-N`; the leader hands it to each proxy task over the channel itself, signed
with the key that task holds (`wire.rekey_body`), so no proxy task is replaced.

An operator gets keys in one of two ways:
- it reads the files at `path` (generation 0) and `path-N` (generation N): in a Swarm task those are
  the mounted secrets (an operator mounts every channel secret into its own service, one restart per
  new generation, never a proxy's); as a plain process, private files of its own (`--channel-key`);
- it created generation 0 itself in this process (`adopt`): then it holds the key in memory, and a
  plain process also writes it to `path` (mode 0600) so that it survives a restart.

A key is used only while the snapshot's secret of its generation names the same certificate (the
secret's label): a file left over from an earlier Swarm would only be refused by every proxy.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_FINGERPRINT_LABEL, CHANNEL_SECRET_NAME
from swarmgate.operator.delivery.channel_key import ChannelKey, ChannelKeyError

log = logging.getLogger("swarmgate.channel")

_ROTATED = re.compile(rf"{re.escape(CHANNEL_SECRET_NAME)}-([1-9][0-9]{{0,8}})")


def channel_generation(secret_name: str) -> int | None:
    """0 for `swarmgate-channel`, N for `swarmgate-channel-N`, None for any other secret."""
    if secret_name == CHANNEL_SECRET_NAME:
        return 0
    match = _ROTATED.fullmatch(secret_name)
    return int(match.group(1)) if match else None


def channel_secret_name(generation: int) -> str:
    return CHANNEL_SECRET_NAME if generation == 0 else f"{CHANNEL_SECRET_NAME}-{generation}"


def generation_path(base: Path, generation: int) -> Path:
    """Where generation N's file is, beside generation 0's (a mounted secret's name is its file)."""
    return base if generation == 0 else base.with_name(f"{base.name}-{generation}")


@dataclass(frozen=True)
class Keyring:
    """The channel keys to try, newest first; generation 0 is what a new proxy task starts with."""

    keys: tuple[tuple[int, ChannelKey], ...]

    @classmethod
    def of(cls, key: ChannelKey) -> Keyring:
        return cls(((0, key),))

    @property
    def newest(self) -> tuple[int, ChannelKey]:
        return self.keys[0]

    @property
    def bootstrap(self) -> ChannelKey | None:
        return next((k for g, k in self.keys if g == 0), None)


class ChannelKeyHolder:
    def __init__(self, path: Path | None, *, writable: bool) -> None:
        self.path = path
        self._writable = writable  # a plain process keeps what it creates; a task's secrets are read-only
        self._lock = threading.Lock()
        self._keys: dict[int, ChannelKey] = {}
        self._trusted: dict[int, str | None] = {}  # generation -> certificate digest on its secret
        self._said: str = ""
        self._load(0)

    def _load(self, generation: int) -> None:
        if self.path is None:
            return
        path = generation_path(self.path, generation)
        if not path.exists():
            return
        try:
            self._keys[generation] = ChannelKey.read(path)
        except ChannelKeyError as exc:
            log.warning("a channel key file is unusable", extra={"path": str(path), "reason": str(exc)})

    def adopt(self, key: ChannelKey, generation: int = 0) -> None:
        """A key this process just put into the Swarm's secret of that generation."""
        with self._lock:
            self._keys[generation] = key
            self._trusted[generation] = key.fingerprint
        if self._writable and self.path is not None:
            path = generation_path(self.path, generation)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(key.file_text())
            os.replace(tmp, path)

    def sync(self, observed: ObservedState) -> None:
        """Learn from a snapshot which generations exist and which certificates they name; read the
        files of generations this process has not read yet (a newly mounted secret)."""
        trusted: dict[int, str | None] = {}
        for secret in observed.secrets:
            generation = channel_generation(secret.name)
            if generation is not None:
                trusted[generation] = secret.labels.get(CHANNEL_FINGERPRINT_LABEL)
        with self._lock:
            for generation in trusted:
                if generation not in self._keys:
                    self._load(generation)
            self._trusted = trusted
            missing = sorted(g for g in trusted if g not in self._keys)
            wrong = sorted(g for g, k in self._keys.items()
                           if g in trusted and trusted[g] is not None and k.fingerprint != trusted[g])
        state = self._state(missing, wrong)
        if state != self._said:
            self._said = state
            if state == "ok":
                log.info("holding the channel key", extra={"generations": ",".join(map(str, sorted(trusted)))})
            elif state:
                log.warning(state)

    @staticmethod
    def _state(missing: list[int], wrong: list[int]) -> str:
        if wrong:
            return (f"the channel key file of generation {wrong} names another certificate than its secret: "
                    "not used")
        if missing:
            names = ", ".join(channel_secret_name(g) for g in missing)
            return (f"this operator does not hold the channel key secret(s) {names}: it can reach only the proxies "
                    "that hold a key it has, until its service mounts them")
        return "ok"

    def keyring(self) -> Keyring | None:
        """The keys the Swarm's secrets still name, newest first (None: none at all)."""
        with self._lock:
            usable = [(g, k) for g, k in self._keys.items()
                      if g not in self._trusted or self._trusted[g] is None or k.fingerprint == self._trusted[g]]
            # A generation whose secret was removed is not used again, but a key held before the
            # snapshot listed its secret (just created) is.
            usable = [(g, k) for g, k in usable if not self._trusted or g in self._trusted]
        if not usable:
            return None
        return Keyring(tuple(sorted(usable, key=lambda item: item[0], reverse=True)))

    def key(self) -> ChannelKey | None:
        """The newest usable key (what a survey reads proxies with first)."""
        ring = self.keyring()
        return ring.newest[1] if ring is not None else None

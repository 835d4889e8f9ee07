"""Which channel keys an operator holds and uses: its files, what it creates, what the Swarm's secrets name."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.ownership import CHANNEL_FINGERPRINT_LABEL
from swarmgate.operator.delivery.channel_holder import (
    ChannelKeyHolder,
    channel_generation,
    channel_secret_name,
    generation_path,
)
from swarmgate.operator.delivery.channel_key import ChannelKey
from swarmgate.operator.planning.channel_mount import is_channel_secret
from tests.factories import swarm_secret

K0, K1, K2 = ChannelKey.generate(), ChannelKey.generate(), ChannelKey.generate()


def swarm(*keys: tuple[int, ChannelKey | None]) -> ObservedState:
    """Secrets for these generations, each labelled with its key's certificate (None: no label)."""
    return ObservedState.from_api(services=[], tasks=[], nodes=[], secrets=[
        swarm_secret(channel_secret_name(g), labels={CHANNEL_FINGERPRINT_LABEL: k.fingerprint} if k else {})
        for g, k in keys])


@pytest.mark.parametrize(("name", "generation"), [
    ("swarmgate-channel", 0), ("swarmgate-channel-1", 1), ("swarmgate-channel-42", 42),
    ("swarmgate-channel-01", None), ("swarmgate-channel-", None), ("swarmgate-channel-x", None),
    ("swarmgate-channelx", None), ("other", None)])
def test_channel_secrets_are_generation_0_and_n_only(name: str, generation: int | None) -> None:
    assert channel_generation(name) == generation
    assert is_channel_secret(name) is (generation is not None)
    if generation is not None:
        assert channel_secret_name(generation) == name


def test_a_process_keeps_the_key_it_creates_in_a_private_file_and_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "channel.key"
    holder = ChannelKeyHolder(path, writable=True)
    assert holder.keyring() is None
    holder.adopt(K0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and ChannelKey.read(path) == K0
    again = ChannelKeyHolder(path, writable=True)
    again.sync(swarm((0, K0)))
    assert again.key() == K0


def test_a_task_never_writes_what_it_creates(tmp_path: Path) -> None:
    path = tmp_path / "channel"
    holder = ChannelKeyHolder(path, writable=False)
    holder.adopt(K0)
    assert holder.key() == K0 and not path.exists()


def test_a_key_whose_certificate_the_secret_does_not_name_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "channel"
    path.write_text(K0.file_text())
    holder = ChannelKeyHolder(path, writable=False)
    holder.sync(swarm((0, K1)))  # the Swarm's secret is another key: a file left from an earlier Swarm
    assert holder.keyring() is None
    holder.sync(swarm((0, None)))  # a secret made by hand (`swarmgate channel-key`) has no label
    assert holder.key() == K0


def test_rotated_generations_are_read_beside_generation_0_and_tried_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "channel"
    for generation, key in ((0, K0), (2, K2)):
        generation_path(path, generation).write_text(key.file_text())
    assert generation_path(path, 2).name == "channel-2"
    holder = ChannelKeyHolder(path, writable=False)
    holder.sync(swarm((0, K0), (1, K1), (2, K2)))  # generation 1 is not mounted here
    ring = holder.keyring()
    assert ring is not None and ring.keys == ((2, K2), (0, K0)) and ring.bootstrap == K0 and ring.newest == (2, K2)
    # A generation whose secret was removed is not used any more.
    holder.sync(swarm((0, K0)))
    ring = holder.keyring()
    assert ring is not None and ring.keys == ((0, K0),)

"""The ACME account's thumbprint recorded in the Swarm (`planning/acme_record`), so that a command
without the channel key renders what the live pass renders: the same config, the same digest. No
Docker: the recorded config is put into the snapshot as Swarm would list it."""

from __future__ import annotations

import json
from pathlib import Path

from swarmgate.models.swarm.observed import ObservedState
from swarmgate.models.swarm.state_file import state_file_document
from swarmgate.operator.cli.offline import cmd_render
from swarmgate.operator.planning.acme_record import RECORD_PREFIX, THUMBPRINT_LABEL, record_name
from swarmgate.operator.planning.actions import Action, CreateConfig, RemoveConfig
from swarmgate.operator.planning.decide import decide_pass
from tests.factories import node, swarm_config, task
from tests.unit.test_acme_plan import CONFIG, DIRECTORY, T0, THUMB, web
from tests.unit.test_plan import SEED

OTHER = "O" * 43


def state(*configs: dict[str, object]) -> ObservedState:
    svc = web()
    return ObservedState.from_api(services=[svc], tasks=[task(svc, "w0", ports={8080: 31000})],
                                  nodes=[node("w0", "198.18.0.20")], configs=list(configs))


def recorded(create: CreateConfig) -> dict[str, object]:
    return swarm_config(create.config.name, create.config.data, labels=create.config.labels)


def record_writes(actions: list[Action]) -> list[tuple[str, str]]:
    """The actions on records: (kind, config name)."""
    out = [("create", a.config.name) for a in actions if isinstance(a, CreateConfig)]
    out += [("remove", a.name) for a in actions if isinstance(a, RemoveConfig)]
    return [w for w in out if w[1].startswith(RECORD_PREFIX)]


def the_record(actions: list[Action]) -> CreateConfig:
    (create,) = [a for a in actions if isinstance(a, CreateConfig) and a.config.name.startswith(RECORD_PREFIX)]
    return create


def test_the_leader_records_its_thumbprint_and_a_keyless_pass_renders_the_same_digest() -> None:
    live = decide_pass(CONFIG, state(), now=T0, acme_thumbprint=THUMB)
    create = the_record(live.actions)
    assert create.config.name == record_name(DIRECTORY, THUMB) and create.config.data == THUMB.encode()
    assert create.config.labels[THUMBPRINT_LABEL] == THUMB
    # Before the record exists a keyless pass has no thumbprint: no challenge location, another digest.
    assert decide_pass(CONFIG, state(), now=T0).desired.extensions[0].rendered.digest != \
        live.desired.extensions[0].rendered.digest
    keyless = decide_pass(CONFIG, state(recorded(create)), now=T0)
    assert keyless.desired.extensions[0].rendered.digest == live.desired.extensions[0].rendered.digest
    # Once recorded, the live pass writes nothing more about it.
    again = decide_pass(CONFIG, state(recorded(create)), now=T0, acme_thumbprint=THUMB)
    assert record_writes(again.actions) == []


def test_a_record_of_another_account_is_replaced_and_a_forged_one_is_ignored() -> None:
    stale = recorded(the_record(decide_pass(CONFIG, state(), now=T0, acme_thumbprint=OTHER).actions))
    live = decide_pass(CONFIG, state(stale), now=T0, acme_thumbprint=THUMB)
    assert record_writes(live.actions) == [("create", record_name(DIRECTORY, THUMB)),
                                           ("remove", record_name(DIRECTORY, OTHER))]
    # A config whose name does not match its labels, or not owned, is not a record.
    forged = swarm_config(record_name(DIRECTORY, THUMB), b"", labels={THUMBPRINT_LABEL: OTHER})
    assert "acme-challenge" not in decide_pass(CONFIG, state(forged), now=T0).desired.extensions[0].rendered.text


def test_swarmgate_render_from_a_state_file_prints_the_live_passs_config(tmp_path: Path) -> None:
    live = decide_pass(CONFIG, state(), now=T0, acme_thumbprint=THUMB)
    create = the_record(live.actions)
    svc = web()
    (tmp_path / "state.json").write_text(json.dumps(state_file_document(
        services=[svc], tasks=[task(svc, "w0", ports={8080: 31000})], nodes=[node("w0", "198.18.0.20")],
        configs=[recorded(create)])))
    (tmp_path / "c.toml").write_text(f'ACMEDirectory = "{DIRECTORY}"\n' + SEED)
    out = tmp_path / "out.conf"
    with out.open("w") as sink:
        assert cmd_render(str(tmp_path / "c.toml"), str(tmp_path / "state.json"), out=sink) == 0
    assert out.read_text() == live.desired.extensions[0].rendered.text

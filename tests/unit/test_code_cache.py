"""The default templates' compiled code cache: used when it can be, never a reason for a render to fail."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest

from swarmgate.renderers.code_cache import TemplateCodeCache
from swarmgate.renderers.nginx import TEMPLATES

TEMPLATE = "control.conf.j2"
CONTEXT = {"dir": "/var/lib/swarmgate", "control_host": "c.invalid", "control_listen": "443 ssl",
           "control_peers": ["10.0.0.0/24"]}


def _env(cache: TemplateCodeCache) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), bytecode_cache=cache,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _cache_in(directory: Path, monkeypatch: pytest.MonkeyPatch) -> TemplateCodeCache:
    monkeypatch.setattr(TemplateCodeCache, "_get_default_cache_dir", lambda self: str(directory))
    return TemplateCodeCache()


def test_a_second_process_loads_the_compiled_code_and_renders_the_same(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    first = _env(_cache_in(tmp_path, monkeypatch)).get_template(TEMPLATE).render(CONTEXT)
    (stored,) = tmp_path.glob("__swarmgate_*.cache")
    second = _env(_cache_in(tmp_path, monkeypatch)).get_template(TEMPLATE).render(CONTEXT)
    assert second == first and "10.0.0.0/24" in first and stored.stat().st_size > 0


def test_a_damaged_cache_file_is_compiled_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _env(_cache_in(tmp_path, monkeypatch)).get_template(TEMPLATE).render(CONTEXT)
    (stored,) = tmp_path.glob("__swarmgate_*.cache")
    stored.write_bytes(b"j2\x00garbage")
    assert _env(_cache_in(tmp_path, monkeypatch)).get_template(TEMPLATE).render(CONTEXT) == expected


def test_no_usable_directory_renders_without_a_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: TemplateCodeCache) -> str:
        raise RuntimeError("Cannot determine safe temp directory.")

    monkeypatch.setattr(TemplateCodeCache, "_get_default_cache_dir", refuse)
    assert "10.0.0.0/24" in _env(TemplateCodeCache()).get_template(TEMPLATE).render(CONTEXT)


def test_an_unwritable_directory_renders_without_a_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "gone"  # dump's temporary file cannot be created there
    assert "10.0.0.0/24" in _env(_cache_in(missing, monkeypatch)).get_template(TEMPLATE).render(CONTEXT)
    assert not missing.exists()

"""The layer contract: the pure core (models, renderers) imports neither docker nor the operator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent.parent / "swarmgate"
PURE = sorted(p for folder in ("models", "renderers") for p in (PACKAGE / folder).rglob("*.py"))
FORBIDDEN = ("docker", "swarmgate.operator", "requests", "socket", "urllib.request", "http.client")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_core_module_imports_no_docker_no_operator_no_network(path: Path) -> None:
    bad = {m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)}
    assert bad == set(), f"{path.name} imports {sorted(bad)}"


# Only the two edges of the operator talk to Docker: observe (reads) and actions (writes).
DOCKER_EDGES = {"observe.py", "actions.py"}
OPERATOR = sorted((PACKAGE / "operator").rglob("*.py"))


@pytest.mark.parametrize("path", OPERATOR, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_observe_and_actions_import_docker(path: Path) -> None:
    uses_docker = any(m == "docker" or m.startswith("docker.") for m in imported_modules(path))
    assert uses_docker == (path.name in DOCKER_EDGES), f"{path.name}: imports docker = {uses_docker}"

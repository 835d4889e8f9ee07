"""The layer contract, as a table: every module sits in one layer and imports only from its own layer
or the layers below it; there are no import circles; only the Docker edge imports `docker`.

The order is the README's "how it works", bottom up: configuration and snapshot types, the route
table, rendering, the pure decision (`planning.decide.decide_pass`: desired state and plan), delivery
to proxies, telemetry, the Docker edge, the running operator (its pass, loop, endpoint and
readiness), the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent.parent / "swarmgate"

# Lowest first. A module belongs to the longest prefix listed here.
LAYERS: list[tuple[str, ...]] = [
    ("swarmgate", "swarmgate.errors", "swarmgate.models.quick_init"),
    ("swarmgate.models.settings",),
    ("swarmgate.models.swarm",),
    ("swarmgate.models.routing",),
    ("swarmgate.renderers",),
    ("swarmgate.operator.planning",),
    ("swarmgate.operator.delivery",),
    ("swarmgate.operator.acme",),
    ("swarmgate.operator.telemetry",),
    ("swarmgate.operator.edge",),
    # The running operator: one pass (observe, elect, decide, apply), the loop, and `Operator`, which
    # owns and wires every part. Its own HTTP endpoint and `/readyz` live here too: they serve what
    # only the running operator holds (its health, holds, role, proxy store), to people and their
    # tools, never to the proxies, so they are not delivery.
    ("swarmgate.operator.control",),
    ("swarmgate.operator.cli", "swarmgate.__main__"),
]
DOCKER_EDGE = "swarmgate.operator.edge"
# The pure core (everything below the operator's I/O) opens no connection of its own.
PURE = ("swarmgate.models", "swarmgate.renderers", "swarmgate.operator.planning")
NETWORK = ("docker", "requests", "socket", "urllib.request", "http.client", "http.server")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


# Empty package markers (`models/__init__.py`) hold no code and belong to no layer.
MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if p.read_text().strip()}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from swarmgate.operator.telemetry import metrics` imports a module too.
            names.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
    return names


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or (module.startswith(prefix + ".") and prefix != "swarmgate")
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_its_own_layer_or_below(module: str) -> None:
    own = layer_of(module)
    assert own >= 0, f"{module} is in no layer of the table"
    upward = sorted(m for m in imports_of(MODULES[module])
                    if m.startswith("swarmgate") and m in MODULES and layer_of(m) > own)
    assert upward == [], f"{module} (layer {own}) imports from above: {upward}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_docker_edge_imports_docker(module: str) -> None:
    docker_imports = sorted(m for m in imports_of(MODULES[module]) if within(m, ("docker",)))
    if not within(module, (DOCKER_EDGE,)):
        assert docker_imports == [], f"{module} is outside {DOCKER_EDGE} and imports {docker_imports}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, PURE)))
def test_pure_core_opens_no_connection(module: str) -> None:
    bad = sorted(m for m in imports_of(MODULES[module]) if within(m, NETWORK))
    assert bad == [], f"{module} imports {bad}"


def test_no_import_circles() -> None:
    graph = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt):], nxt]
                raise AssertionError("import circle: " + " → ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


# A module longer than this holds more than one idea: split it along its data (issue 19). Every line
# counts, docstrings and blank lines too; shell scripts and templates are not modules.
MAX_MODULE_LINES = 300


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_at_most_300_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines (at most {MAX_MODULE_LINES}): split it"

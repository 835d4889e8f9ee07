"""The documentation cannot drift: the site builds strictly, and every command it shows is run.

Every fenced shell block in README.md and docs/ is one of two kinds.

* ```` ```console ````: offline `swarmgate` commands. Each `$ swarmgate ...` line is run here for real
  (`python -m swarmgate`, from the repository root, against the files in docs/examples/), and the
  lines after it, up to the next `$ `, are what it prints: stdout, or stderr for a block marked
  `<!-- exit: 2 -->`. The exit code must be 0, or the one the marker names.
* ```` ```sh ```` (or `bash`, `shell`): commands that need a Swarm or the lab. The block must follow a
  `<!-- run-by: FILE [FILE...] -->` line, and each of its commands must be one that a named file runs:
  a `make TARGET [VAR=value...]` of the Makefile, or an argument list in a Python test (its string
  literals, with module-level constants filled in; any other expression stands for one word; a call
  `docker_cli(ctx, *words)` runs `docker *words`). A here-document's lines must appear, in order, in
  a named file.

This module is pure but for running `swarmgate` and `mkdocs` as subprocesses; nothing needs the lab or
the network.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
README_MAX_LINES = 200

SHELL = ("sh", "bash", "shell")
OFFLINE = ("check-config", "render", "routes", "plan", "channel-key", "version")
WILDCARD = None  # a word a source computes at run time: it matches any one word
Word = str | None


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    lines: tuple[str, ...]
    marker: str  # the HTML comment right above the fence, without `<!--`/`-->`, or ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"\s*(```+|~~~+)\s*([\w-]*)", lines[i])
        if not fence:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
            body.append(lines[i])
            i += 1
        above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = above[4:-3].strip() if above.startswith("<!--") and above.endswith("-->") else ""
        yield Block(page, start + 1, fence.group(2).lower(), tuple(body), marker)
        i += 1


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
CONSOLE = [b for b in ALL_BLOCKS if b.language == "console"]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.language in SHELL]


# --- offline commands -----------------------------------------------------------------------------


def console_steps(block: Block) -> list[tuple[list[str], str]]:
    """The block's commands, each with the output the page shows for it."""
    steps: list[tuple[list[str], list[str]]] = []
    for line in block.lines:
        if line.startswith("$ "):
            steps.append((shlex.split(line[2:]), []))
        else:
            assert steps, f"{block.where}: output before the first `$ ` command"
            steps[-1][1].append(line)
    return [(argv, "".join(out + "\n" for out in shown)) for argv, shown in steps]


def offline_env() -> dict[str, str]:
    # A channel key or a Docker endpoint in the environment would make `plan` ask real proxies.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWARMGATE_", "DOCKER_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize("block", CONSOLE, ids=[b.where for b in CONSOLE])
def test_offline_commands_print_what_the_page_shows(block: Block) -> None:
    expected_exit = int(block.marker.removeprefix("exit:").strip()) if block.marker.startswith("exit:") else 0
    steps = console_steps(block)
    assert steps, f"{block.where}: a console block with no `$ ` command"
    for argv, shown in steps:
        assert argv[0] == "swarmgate" and len(argv) > 1 and argv[1] in OFFLINE, (
            f"{block.where}: `{shlex.join(argv)}` is not an offline swarmgate command ({', '.join(OFFLINE)})")
        proc = subprocess.run([sys.executable, "-m", "swarmgate", *argv[1:]], cwd=REPO, env=offline_env(),
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == expected_exit, f"{block.where}: `{shlex.join(argv)}`: {proc.stderr}"
        if shown:
            printed = proc.stderr if expected_exit == 2 else proc.stdout
            assert printed == shown, f"{block.where}: `{shlex.join(argv)}` now prints:\n{printed}"


# --- commands run by a named file -----------------------------------------------------------------


@dataclass(frozen=True)
class ShellBlock:
    commands: tuple[tuple[str, ...], ...]
    heredocs: tuple[tuple[str, ...], ...]


def parse_shell(block: Block) -> ShellBlock:
    """Commands split at `|`, `&&`, `||` and `;`, with `\\` continuations joined and comments dropped."""
    commands: list[tuple[str, ...]] = []
    heredocs: list[tuple[str, ...]] = []
    lines = list(block.lines)
    while lines:
        line = lines.pop(0)
        while line.endswith("\\") and lines:
            line = line[:-1] + " " + lines.pop(0)
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            body: list[str] = []
            while lines and lines[0].strip() != heredoc.group(1):
                body.append(lines.pop(0))
            assert lines, f"{block.where}: here-document without its `{heredoc.group(1)}`"
            lines.pop(0)
            heredocs.append(tuple(body))
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, ";"]:
            if token in ("|", "&&", "||", ";"):
                # `cat << EOF` only feeds the here-document to the next command.
                if command and not (command[0] == "cat" and "<<" in command):
                    commands.append(tuple(command))
                command = []
            else:
                command.append(token)
    return ShellBlock(tuple(commands), tuple(heredocs))


def make_commands(text: str) -> list[tuple[Word, ...]]:
    """`make TARGET` for each target; variables are checked by `matches_make`."""
    targets = re.findall(r"^([a-z][\w-]*):", text, flags=re.MULTILINE)
    return [("make", target) for target in targets]


def make_variables(text: str) -> set[str]:
    return set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=", text, flags=re.MULTILINE))


class _Words:
    """Argument lists a Python file builds, its module-level string constants filled in."""

    def __init__(self, tree: ast.Module) -> None:
        self.constants: dict[str, ast.expr] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                self.constants[stmt.targets[0].id] = stmt.value

    def word(self, node: ast.expr) -> Word:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else WILDCARD
        if isinstance(node, ast.Name) and node.id in self.constants:
            return self.word(self.constants[node.id])
        if isinstance(node, ast.JoinedStr):
            parts = [self.word(v.value) if isinstance(v, ast.FormattedValue) else self.word(v) for v in node.values]
            return None if any(p is None for p in parts) else "".join(p for p in parts if p is not None)
        return WILDCARD

    def words(self, nodes: list[ast.expr]) -> tuple[Word, ...] | None:
        out: list[Word] = []
        for node in nodes:
            if isinstance(node, ast.Starred):
                listed = self.constants.get(node.value.id) if isinstance(node.value, ast.Name) else None
                if not isinstance(listed, ast.List | ast.Tuple):
                    return None  # a list built at run time: its length is unknown
                out.extend(self.word(e) for e in listed.elts)
            else:
                out.append(self.word(node))
        return tuple(out)

    def commands(self, tree: ast.Module) -> Iterator[tuple[Word, ...]]:
        for node in ast.walk(tree):
            if isinstance(node, ast.List | ast.Tuple):
                found = self.words(node.elts)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith("_cli"):
                rest = self.words(node.args[1:])
                found = None if rest is None else (node.func.id.removesuffix("_cli"), *rest)
            else:
                continue
            if found and isinstance(found[0], str):
                yield found


def python_commands(text: str) -> list[tuple[Word, ...]]:
    tree = ast.parse(text)
    return list(_Words(tree).commands(tree))


def matches(command: tuple[str, ...], source: tuple[Word, ...]) -> bool:
    return len(command) == len(source) and all(s is WILDCARD or s == c for c, s in zip(command, source, strict=True))


def run_by(command: tuple[str, ...], path: Path) -> bool:
    text = path.read_text()
    if path.name == "Makefile":
        variables = make_variables(text)
        head = tuple(w for w in command if not re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", w))
        assigned = {w.split("=", 1)[0] for w in command if w not in head}
        return assigned <= variables and any(matches(head, source) for source in make_commands(text))
    if path.suffix == ".py":
        return any(matches(command, source) for source in python_commands(text))
    return False


def in_order(body: tuple[str, ...], path: Path) -> bool:
    """The here-document's lines appear, consecutively, among the file's non-comment lines."""
    want = [line.strip() for line in body if line.strip()]
    have = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.where for b in SHELL_BLOCKS])
def test_every_shell_command_is_run_by_the_file_it_names(block: Block) -> None:
    assert block.marker.startswith("run-by:"), (
        f"{block.where}: a shell block needs `<!-- run-by: FILE -->` above it, naming what runs its commands "
        "(or make it a `console` block of offline swarmgate commands)")
    sources = [REPO / name for name in block.marker.removeprefix("run-by:").split()]
    for source in sources:
        assert source.is_file(), f"{block.where}: run-by names {source.relative_to(REPO)}, which does not exist"
    parsed = parse_shell(block)
    assert parsed.commands, f"{block.where}: a shell block with no command"
    for command in parsed.commands:
        assert any(run_by(command, s) for s in sources), (
            f"{block.where}: `{shlex.join(command)}` is run by none of {block.marker.removeprefix('run-by:')}")
    for body in parsed.heredocs:
        assert any(in_order(body, s) for s in sources), f"{block.where}: the here-document is in no named file"


def test_the_checker_catches_a_command_nobody_runs() -> None:
    block = Block(REPO / "README.md", 1, "sh", ("make demo", "make no-such-target MANAGERS=3"), "run-by: Makefile")
    commands = parse_shell(block).commands
    assert run_by(commands[0], REPO / "Makefile")
    assert not run_by(commands[1], REPO / "Makefile")
    seed_e2e = REPO / "tests" / "lab" / "test_seed_e2e.py"
    assert run_by(("docker", "service", "update", "--constraint-add", "node.labels.nodetype==loadbalancer",
                   "interlock-proxy"), seed_e2e)
    assert not run_by(("docker", "service", "update", "--constraint-add", "node.labels.nodetype==lb",
                       "interlock-proxy"), seed_e2e)


def test_no_other_block_holds_commands() -> None:
    """Commands hide nowhere else: a text block may show output, never a prompt the checker skips."""
    for block in ALL_BLOCKS:
        if block.language in (*SHELL, "console"):
            continue
        prompts = [line for line in block.lines if line.startswith("$ ")]
        assert prompts == [], f"{block.where}: a `{block.language or 'plain'}` block with a command: {prompts[0]}"


# --- the site and the README ----------------------------------------------------------------------


def test_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link or anchor, or a page missing from nav, fails the build."""
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_short_and_its_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"

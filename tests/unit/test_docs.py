"""Docs are code: every command a user copies from README.md and docs/ names a real command with real
options, and every Python snippet compiles and imports what exists. (docs/featurestore.md's snippet
also runs, on data, in tests/integration/test_docs_snippets.py.)"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest
import typer

from fjord.cli.main import app
from fjord.jobmain import spec_parser
from fjord.jobspec import JobSpec

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _blocks(language: str) -> list[tuple[str, str]]:
    """(where, text) of every fenced block in ``language``."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.S | re.M):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{path.relative_to(REPO)}:{line}", match.group(1)))
    return found


def _command_lines() -> list[tuple[str, str]]:
    lines = []
    for where, block in _blocks("bash"):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command.startswith(("fjord ", "python -m jobs.")):
                lines.append((where, command))
    return lines


def _concrete(tokens: list[str]) -> list[str]:
    """Placeholders (``<run_id>``, ``NAME``, ``[--canary]``, ``[NAME...]``) as a user fills them in."""
    out = []
    for token in tokens:
        if token.startswith("[") and token.endswith("...]"):
            continue
        token = token.strip("[]")
        if token in ("N", "<n>"):  # a number
            token = "1"
        out.append("x" if re.fullmatch(r"<[^>]+>|[A-Z][A-Z_]*", token) else token)
    return out


def _alternatives(command: str) -> list[list[str]]:
    """``fjord env show fraud | list fraud`` is two commands: the second replaces the first's last word
    below its deepest group."""
    command = re.sub(r"(?<=\w)\|(?=\w)", " | ", command)  # start|stop as start | stop
    first, *others = [shlex.split(part) for part in command.split(" | ")]
    group = typer.main.get_command(app)
    depth = 1  # "fjord"
    while depth < len(first) and first[depth] in getattr(group, "commands", {}):
        sub = group.commands[first[depth]]  # type: ignore[attr-defined]
        if not hasattr(sub, "commands"):  # a command, not a group (Typer's own click has no Group)
            break
        group, depth = sub, depth + 1
    return [first, *([*first[:depth], *other] for other in others)]


def _parse_fjord(tokens: list[str]) -> None:
    command = typer.main.get_command(app)
    args = tokens[1:]
    names = ["fjord"]
    while hasattr(command, "commands"):
        assert args, f"{' '.join(names)} needs a subcommand"
        assert args[0] in command.commands, f"{' '.join(names)} has no command {args[0]!r}"
        names.append(args[0])
        command, args = command.commands[args[0]], args[1:]
    command.make_context(" ".join(names), list(args))  # a UsageError names what is wrong


def _parse_job(tokens: list[str]) -> None:
    module = importlib.import_module(tokens[2])
    specs = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, JobSpec) and v is not JobSpec
    ]
    assert specs, f"{tokens[2]} has no job spec"
    spec_parser(specs[0], None).parse_args(tokens[3:])  # argparse exits 2 on an unknown option


@pytest.mark.parametrize(
    ("where", "command"), _command_lines(), ids=[f"{w} {c[:40]}" for w, c in _command_lines()]
)
def test_a_documented_command_parses(where: str, command: str) -> None:
    for tokens in _alternatives(command):
        tokens = _concrete(tokens)
        try:
            _parse_fjord(tokens) if tokens[0] == "fjord" else _parse_job(tokens)
        except Exception as exc:  # Typer's vendored click raises its own UsageError
            if not hasattr(exc, "format_message"):
                raise
            pytest.fail(f"{where}: {' '.join(tokens)}: {exc.format_message()}")
        except SystemExit:
            pytest.fail(f"{where}: {' '.join(tokens)}: the job refused its options")


def test_the_docs_show_commands() -> None:
    assert len(_command_lines()) >= 40  # the extraction found the README's and docs' commands


@pytest.mark.parametrize(("where", "code"), _blocks("python"), ids=[w for w, _ in _blocks("python")])
def test_a_python_snippet_compiles_and_imports_what_exists(where: str, code: str) -> None:
    tree = ast.parse(code, filename=where)
    imported: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                target = getattr(module, alias.name, None)
                if target is None:
                    target = importlib.import_module(f"{node.module}.{alias.name}")
                imported[alias.asname or alias.name] = target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imported[alias.asname or alias.name] = importlib.import_module(alias.name)
    for node in ast.walk(tree):  # module.function(...) of an imported module: the function exists
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = imported.get(node.value.id)
            if owner is not None:
                assert hasattr(owner, node.attr), f"{where}: {node.value.id}.{node.attr} does not exist"

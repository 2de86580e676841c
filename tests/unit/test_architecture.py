"""The dependency rules of the layout, checked on the source: stages use the core, never the reverse;
only dags/ and fjord/airflow/ import Airflow; only the CLI layer may load stages."""

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

STAGES = ("featurestore", "jobs", "dags")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(*folders: str) -> list[Path]:
    """The project's own Python files (not those of venvs or data under hidden directories)."""
    return [
        p
        for folder in folders
        for p in sorted((REPO / folder).rglob("*.py"))
        if not any(part.startswith(".") for part in p.relative_to(REPO).parts)
    ]


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("path", _sources("fjord"), ids=lambda p: str(p.relative_to(REPO)))
def test_core_library_imports_no_stage(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    if rel.startswith("fjord/cli/"):
        return  # the CLI layer may load stages (lazily, inside commands)
    assert not {_top(n) for n in _imports(path)} & set(STAGES), f"{rel} imports a stage"


@pytest.mark.parametrize(
    "path", _sources("fjord", "featurestore", "jobs", "bench"), ids=lambda p: str(p.relative_to(REPO))
)
def test_only_dags_and_fjord_airflow_import_airflow(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    if rel.startswith("fjord/airflow/"):
        return
    assert "airflow" not in {_top(n) for n in _imports(path)}, f"{rel} imports Airflow"


def test_cli_loads_stages_lazily() -> None:
    for path in _sources("fjord/cli"):
        tree = ast.parse(path.read_text())
        module_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in module_level:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not {_top(n) for n in names} & set(STAGES), f"{path.name} imports a stage at module level"


_SCHEME_CHECK = re.compile(r"""scheme\s*[!=]=|\.scheme\s+in\b|startswith\(\s*["'](file|s3a?|hdfs)://""")


@pytest.mark.parametrize(
    "path",
    [p for p in _sources("fjord", "featurestore", "jobs", "dags") if "fjord/fs/" not in p.as_posix()],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_scheme_checks_stay_inside_fjord_fs(path: Path) -> None:
    """What differs by URI scheme is fjord/fs's to answer (Backend.local, local_path,
    object_store_options): a scheme test elsewhere is a backend choice made twice."""
    found = [line.strip() for line in path.read_text().splitlines() if _SCHEME_CHECK.search(line)]
    assert not found, found

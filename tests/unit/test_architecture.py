"""The dependency rules of the layout (docs/architecture.md, "Layers"), checked on the source:

    fjord/cli/                       the top layer: commands; may load stages, lazily
    dags/                            wiring: Airflow DAGs over the core's pipeline definition
    jobs/, featurestore/             the stages
    fjord/ (all but fjord/cli/)      the core

Each layer imports only the layers below it; only dags/ and fjord/airflow/ import Airflow."""

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


def _core() -> list[Path]:
    return [p for p in _sources("fjord") if not p.relative_to(REPO).as_posix().startswith("fjord/cli/")]


def _above(name: str) -> bool:
    """Whether the module ``name`` belongs to the CLI layer (the top)."""
    return name == "fjord.cli" or name.startswith("fjord.cli.")


@pytest.mark.parametrize("path", _core(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_core_imports_no_stage_and_not_the_cli(path: Path) -> None:
    rel = path.relative_to(REPO).as_posix()
    names = _imports(path)
    assert not {_top(n) for n in names} & set(STAGES), f"{rel} imports a stage"
    assert not [n for n in names if _above(n)], f"{rel} imports the CLI layer above it"


@pytest.mark.parametrize(
    "path", _sources("featurestore", "jobs", "dags"), ids=lambda p: str(p.relative_to(REPO))
)
def test_stages_and_dags_do_not_import_the_cli(path: Path) -> None:
    names = _imports(path)
    assert not [n for n in names if _above(n)], f"{path.relative_to(REPO)} imports the CLI layer"


def test_the_core_names_no_stage_module_outside_the_pipeline_registry() -> None:
    """The core knows the stage jobs only by name, in one place (fjord/pipeline.py's STAGES): a
    dotted ``jobs.`` string elsewhere in the core is a dependency the imports above do not see."""
    found = []
    for path in _core():
        if path.name == "pipeline.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"[\"']jobs\.[a-z_]+\.[a-z_]+", line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, found


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

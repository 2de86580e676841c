"""Environment specs and their checks, without the package index.

Builds against the index: ``tests/integration/test_env_builds.py``.
"""

from pathlib import Path

import pytest

from fjord import envs
from fjord.envs import (
    build_environment,
    current_environment,
    parse_spec,
    platform_pins,
    spec_from_file,
)
from fjord.errors import EnvironmentBuildError
from fjord.projects import create_project

# A tiny pure-Python package that the platform does not carry.
EXTRA = "pyjokes==0.8.3"

CONDA_SPEC = """
name: fraud
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
  - pyjokes=0.8
  - pip:
      - humanize>=4
"""


def test_conda_spec_becomes_pip_requirements() -> None:
    assert parse_spec(CONDA_SPEC, "environment.yml") == ["pyjokes==0.8.*", "humanize>=4"]


def test_requirements_txt_ignores_comments() -> None:
    assert parse_spec("# tools\npyjokes==0.8.3  # jokes\n\nhumanize\n", "requirements.txt") == [
        "pyjokes==0.8.3",
        "humanize",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dependencies: [pip: x]\n", "must be 'pip: \\[...\\]'"),
        ("dependencies: {a: 1}\n", "'dependencies' must be a list"),
        ("name: x\nbogus: 1\n", "unknown key 'bogus'"),
        ("dependencies: [\n", "malformed YAML"),
        ("dependencies:\n  - python=2.7\n", "asks for python ==2.7"),
        ("dependencies:\n  - python=3.1\n", r"asks for python ==3\.1\.\*"),  # not a prefix of 3.11
        ("dependencies:\n  - python<3.11\n", "asks for python <3.11"),
        ("dependencies:\n  - python>=>3\n", "not a valid python version pin"),
        ("dependencies:\n  - 42\n", "neither a string nor 'pip:'"),
    ],
)
def test_malformed_conda_specs(text: str, message: str) -> None:
    with pytest.raises(EnvironmentBuildError, match=message):
        parse_spec(text, "environment.yml")


@pytest.mark.parametrize(
    "pin", ["python", "python=3.11", "python>=3.10", "python>=3.10,<4", "python==3.11.*"]
)
def test_python_pins_the_platform_meets(pin: str) -> None:
    """A python pin the platform's Python meets is accepted and asks pip for nothing."""
    assert parse_spec(f"dependencies:\n  - {pin}\n  - pyjokes=0.6\n", "environment.yml") == ["pyjokes==0.6.*"]


def test_a_concurrent_identical_build_keeps_the_winner(tmp_path: Path) -> None:
    final = tmp_path / "env"
    for name in ("winner", "loser"):
        staging = tmp_path / name / "venv"
        staging.mkdir(parents=True)
        (staging / envs.RECORD_FILE).write_text(name)
        envs._rename_into_place(staging, final)
    assert (final / envs.RECORD_FILE).read_text() == "winner" and not (tmp_path / "loser" / "venv").exists()


def test_platform_pins_include_the_engines() -> None:
    pins = platform_pins()
    assert pins["pyspark"].startswith("4.")
    assert "tensorflow" in pins and "apache-airflow" in pins


def test_empty_spec_is_the_platform() -> None:
    project = create_project("p")
    env = build_environment(project)
    assert env.additions == []
    assert env.platform_lock_hash == envs.platform_lock_hash()
    assert current_environment(project).key == env.key


def req(text: str):
    return spec_from_file("requirements.txt", text)


def test_spec_file_names_and_content_are_checked_up_front() -> None:
    with pytest.raises(EnvironmentBuildError, match=r"environment\.yml or requirements\.txt"):
        spec_from_file("Pipfile", "x")
    with pytest.raises(EnvironmentBuildError, match="malformed YAML"):
        spec_from_file("env.yaml", "dependencies: [\n")

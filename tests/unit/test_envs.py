"""Environment specs, hashing, reuse and failures. Builds are real (uv against the package index)."""

import subprocess
from pathlib import Path

import pytest

from fjord import envs
from fjord.envs import (
    RECORD_FILE,
    build_environment,
    current_environment,
    install_packages,
    pack_environment,
    parse_spec,
    platform_pins,
    read_project_spec,
    spec_from_file,
)
from fjord.errors import EnvironmentBuildError, NotFoundError
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
    parse_spec(f"dependencies:\n  - {pin}\n", "environment.yml")


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


def test_build_installs_only_the_additions_and_reuses_by_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    project = create_project("fraud")
    env = build_environment(project, req(f"{EXTRA}\n"))
    assert env.additions == [EXTRA]
    site = next(env.path.glob("lib/python*/site-packages"))
    assert (site / "pyjokes").is_dir()
    assert not (site / "pyspark").exists()  # the platform is layered in, not copied
    out = subprocess.run(
        [str(env.python), "-c", "import pyjokes, pyspark, fjord; print(pyspark.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == platform_pins()["pyspark"]
    lock = project.fs.read_text(f"Environments/{env.key}.lock.txt")
    assert f"{EXTRA}\n" in lock and f"pyspark=={platform_pins()['pyspark']}\n" in lock

    assert read_project_spec(project).text == f"{EXTRA}\n"  # stored as the project's spec

    marker = env.path / RECORD_FILE
    before = marker.stat().st_mtime_ns
    monkeypatch.setattr(envs, "_resolve", None)  # an unchanged spec needs no resolution (no index)
    again = build_environment(project)
    assert again.key == env.key and marker.stat().st_mtime_ns == before  # reused, not rebuilt
    monkeypatch.undo()

    changed = build_environment(project, req("pyjokes==0.8.2\n"))
    assert changed.key != env.key
    assert build_environment(project, upgrade=True).key == changed.key  # resolved again, same result


def test_a_project_cannot_move_a_platform_pin() -> None:
    project = create_project("fraud")
    with pytest.raises(EnvironmentBuildError, match="numpy"):
        build_environment(project, req("numpy==1.21.0\n"))
    with pytest.raises(NotFoundError, match="has no environment yet"):
        current_environment(project)
    assert read_project_spec(project).text == ""  # the failed spec was not stored


def test_unresolvable_spec_leaves_nothing_behind(fjord_home: Path) -> None:
    project = create_project("fraud")
    good = build_environment(project, req(f"{EXTRA}\n"))
    with pytest.raises(EnvironmentBuildError, match="this-package-does-not-exist-fjord"):
        build_environment(project, req("this-package-does-not-exist-fjord==1.0\n"))
    assert read_project_spec(project).text == f"{EXTRA}\n"
    assert current_environment(project).key == good.key
    left = sorted(p.name for p in (fjord_home / "envs" / "fraud").iterdir())
    assert left == sorted([good.key, "specs", ".locks"])  # .locks: lock files only


def test_interrupted_build_is_not_picked_up(fjord_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = create_project("fraud")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the build is interrupted while installing

    monkeypatch.setattr(envs, "_install", killed)
    with pytest.raises(KeyboardInterrupt):
        build_environment(project, req(f"{EXTRA}\n"))
    assert [p.name for p in (fjord_home / "envs" / "fraud").iterdir()] == ["specs"]
    assert list((fjord_home / "envs" / "fraud" / "specs").iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("FJORD_HOME", str(fjord_home))
    env = build_environment(project, req(f"{EXTRA}\n"))
    assert (env.path / RECORD_FILE).is_file()


def test_install_adds_to_the_spec_only_when_it_resolves() -> None:
    project = create_project("fraud")
    build_environment(project, spec_from_file("environment.yml", "name: fraud\ndependencies:\n  - pip\n"))
    env = install_packages(project, [EXTRA])
    assert env.additions == [EXTRA]
    assert EXTRA in project.fs.read_text("Environments/environment.yml")
    with pytest.raises(EnvironmentBuildError):
        install_packages(project, ["numpy==1.21.0"])
    assert "numpy" not in project.fs.read_text("Environments/environment.yml")
    assert current_environment(project).key == env.key


def test_pack_writes_the_archive_atomically_once() -> None:
    project = create_project("fraud")
    env = build_environment(project, req(f"{EXTRA}\n"))
    uri = pack_environment(project, env)
    assert uri.endswith(f"Environments/{env.key}.tar.gz")
    assert project.fs.exists(f"Environments/{env.key}.tar.gz")
    assert current_environment(project).archive_uri == uri
    assert [n for n in project.fs.listdir("Environments", include_hidden=True) if n.startswith("_tmp")] == []


def test_spec_file_names_and_content_are_checked_up_front() -> None:
    with pytest.raises(EnvironmentBuildError, match=r"environment\.yml or requirements\.txt"):
        spec_from_file("Pipfile", "x")
    with pytest.raises(EnvironmentBuildError, match="malformed YAML"):
        spec_from_file("env.yaml", "dependencies: [\n")

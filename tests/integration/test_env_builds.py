"""Environment builds, reuse by hash and failures: real builds, uv against the package index."""

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
    platform_pins,
    read_project_spec,
    spec_from_file,
)
from fjord.errors import EnvironmentBuildError, NotFoundError
from fjord.projects import create_project
from tests.unit.test_envs import EXTRA, req


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


def test_an_environment_missing_on_this_host_is_built_before_a_run_uses_it() -> None:
    """A recorded environment that is not on this host (a new worker, a wiped cache) is built for
    the run, never replaced by the platform's Python, and lineage names the lock the run uses."""
    import shutil

    from fjord.config import get_settings
    from fjord.lineage import env_lock_hash
    from fjord.spark import spark_conf

    project = create_project("fraud")
    env = build_environment(project, req(f"{EXTRA}\n"))
    shutil.rmtree(env.path)
    with pytest.raises(NotFoundError, match="not built on this machine"):
        current_environment(project)
    assert env_lock_hash(project) == env.lock_hash  # built again on the way
    assert (env.path / RECORD_FILE).is_file()
    shutil.rmtree(env.path)
    _, python = spark_conf(get_settings(), project)
    assert python == str(env.python) and env.python.is_file()

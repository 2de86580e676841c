"""Shared fixtures: every test gets its own FJORD_HOME; one SparkSession serves the whole session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fjord.config import reset_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fjord_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty embedded stack under tmp_path, with no FJORD_* settings leaking in from outside."""
    for name in list(os.environ):
        if name.startswith("FJORD_"):
            monkeypatch.delenv(name)
    home = tmp_path / "fjord-home"
    monkeypatch.setenv("FJORD_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture(scope="session")
def spark():
    """The test session's one SparkSession (local[2])."""
    from fjord import spark as fjord_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = fjord_spark.get_spark(app_name="fjord-tests")
    yield session
    fjord_spark.stop_spark()


def run_fjord(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """Run the installed ``fjord`` console script in a subprocess, as a user would."""
    import subprocess

    fjord = Path(sys.executable).with_name("fjord")
    return subprocess.run(
        [str(fjord), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (the embedded one, started once for the session); its URI."""
    from fjord.config import Settings
    from fjord.experiment.tracking import start_server, stop_server

    settings = Settings(home=tmp_path_factory.mktemp("mlflow-home"))
    uri = start_server(settings)
    yield uri
    stop_server(settings)


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's settings point at the session's MLflow server (any tracking URI is one setting)."""
    monkeypatch.setenv("FJORD_MLFLOW__TRACKING_URI", mlflow_server)
    reset_settings()
    return mlflow_server

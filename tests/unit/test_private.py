"""Secrets out of sight: `fjord config show` masks every one, the Spark tasks' command line carries
none, and a private file is never readable by others, not even for a moment."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

import pytest

from fjord.airflow.hook import _secrets_to_file
from fjord.cli.main import main
from fjord.config import reset_settings
from fjord.private import redact, write_private

SECRETS = {
    "FJORD_METADATA__URL": "postgresql://u:secretpw1@h/db",
    "FJORD_AIRFLOW__PASSWORD": "secretpw2",
    "FJORD_STORAGE__S3_KEY": "AKIDSECRET3",
    "FJORD_STORAGE__S3_SECRET": "secretpw4",
    "FJORD_REDIS__URL": "redis://:secretpw5@127.0.0.1:6379/0",
    "FJORD_MLFLOW__TRACKING_URI": "http://admin:secretpw6@mlflow:5000",
}


def test_config_show_masks_every_secret(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert not [v for v in SECRETS.values() if v in out]
    assert "postgresql://u:***@h/db" in out and "redis://:***@127.0.0.1:6379/0" in out
    assert "s3_secret: '***'" in out and "password: '***'" in out


def test_redact_keeps_what_is_not_secret() -> None:
    data = {
        "url": "http://h:8080/x",
        "port": 8080,
        "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "s"}},
    }
    assert redact(data) == {"url": "http://h:8080/x", "port": 8080,
                            "spark": {"conf": {"spark.hadoop.fs.s3a.secret.key": "***"}}}  # fmt: skip


def test_a_spark_tasks_secrets_go_to_a_private_file_not_its_command_line(tmp_path: Path) -> None:
    argv = ["spark-submit", "--master", "local[2]", "--conf", "spark.hadoop.fs.s3a.access.key=AK",
            "--conf", "spark.hadoop.fs.s3a.secret.key=SK=with=equals", "--conf", "spark.ui.enabled=false",
            "main.py", "--project", "fraud"]  # fmt: skip
    path = tmp_path / "secrets.properties"
    moved = _secrets_to_file(argv, path)
    assert moved == ["spark-submit", "--properties-file", str(path), "--master", "local[2]",
                     "--conf", "spark.ui.enabled=false", "main.py", "--project", "fraud"]  # fmt: skip
    assert "AK" not in " ".join(moved) and "SK=" not in " ".join(moved)
    assert (
        path.read_text()
        == "spark.hadoop.fs.s3a.access.key AK\nspark.hadoop.fs.s3a.secret.key SK=with=equals\n"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _secrets_to_file(argv[:3], tmp_path / "none") == argv[:3]  # nothing secret: no file
    assert not (tmp_path / "none").exists()


def test_a_private_file_is_never_readable_by_others(tmp_path: Path) -> None:
    """Watch the directory while the file is written: no moment shows a mode other than 600."""
    target = tmp_path / "passwords.json"
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for entry in os.scandir(tmp_path):
                with contextlib.suppress(FileNotFoundError):  # replaced meanwhile
                    seen.add(stat.S_IMODE(entry.stat().st_mode))

    watcher = threading.Thread(target=watch)
    watcher.start()
    for i in range(50):
        write_private(target, "x" * 10_000 + str(i))
    done.set()
    watcher.join()
    assert seen == {0o600} and target.read_text().endswith("49")
    os.chmod(target, 0o644)  # an existing file with a wider mode is written back to 600
    write_private(target, "again")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

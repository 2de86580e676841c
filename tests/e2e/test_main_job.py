"""`make run`'s job, run as a user runs it: the `fjord run` console script on the embedded defaults."""

import re
from pathlib import Path

import pytest

from tests.conftest import run_fjord

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_mlflow(fjord_home):
    """The job starts the embedded MLflow server in this home; stop it afterwards."""
    yield
    run_fjord("mlflow", "stop")


def test_main_job_runs_every_landed_stage_and_reruns_cleanly(fjord_home, embedded_mlflow) -> None:
    first = run_fjord("run")
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for text in (
        "Spark 4.1",
        "2 batches, 20,000 transactions",
        "batch 2026-11-01:",
        "0 quarantined",
        "published transactions_features commit 0",
        "training dataset v1",
        "online vector of tid",
        "raw landing batches: 2026-11-01, 2026-11-02",
        "model fraud v1 (candidate) from training dataset v1",
        "model fraud v1 <- train run train-",
    ):
        assert text in out, text
    assert re.search(r"label rate \d\.\d+%", out)
    # library noise (log4j, absl, GX) goes to the run's log file, not the terminal
    assert first.stderr == "", first.stderr[-2000:]
    log = re.search(r"library output\s+(\S+)", out).group(1)
    assert "WARN" in Path(log).read_text()
    assert "<- featurestore.publish run" in out  # the training data leads back through the publishes
    second = run_fjord("run")
    assert second.returncode == 0, second.stderr[-3000:]
    # the same batches again: already published, so no new commit (a scheduler's retry is harmless)
    assert "published transactions_features commit 1 (unchanged)" in second.stdout
    assert "model fraud v2 (candidate) from training dataset v2" in second.stdout
    auc = float(re.search(r"test ROC AUC (\d\.\d+)", out).group(1))
    assert auc > 0.75  # engineered features make fraud learnable (raw amount alone: about 0.69)
    listing = run_fjord("featurestore", "list", "fraud")
    assert "transactions_features" in listing.stdout and "1, 2" in listing.stdout  # two training datasets

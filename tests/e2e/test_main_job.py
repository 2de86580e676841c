"""`make run`'s job, run as a user runs it: the `fjord run` console script on the embedded defaults."""

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_fjord

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_mlflow(fjord_home):
    """The job starts the embedded MLflow server, the model server and Kafka in this home; stop them."""
    yield
    run_fjord("model", "stop", "--project", "fraud")
    run_fjord("mlflow", "stop")
    run_fjord("services", "stop")


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
        "deployed fraud v1 as stable of serving fraud (blessed: no champion yet",
        "-> fraud probability 0.",
        "fraud_inference_log request",
        "fraud_inference_log response",
        "2 records of inference",
        "<- served fraud v1 <- deploy run deploy-",
        "<- model fraud v1 <- train run train-",
        "<- training dataset fraud_demo_1 v1",
        "card_features_1 commit",
        "<- raw landing batches: 2026-11-01, 2026-11-02",
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
    # v2 went through the gate against the champion v1: deployed, or refused with both figures
    assert re.search(r"deployed fraud v2 as stable|not deployed.*v2 not deployed: ROC AUC", second.stdout)
    served = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    assert served["state"] == "Running" and served["labels"]["stable"] in (1, 2)
    _a_worse_model_is_refused_and_nothing_changes(served)
    _mlflow_loads_the_champion()
    _rollback_returns_to_the_version_before(served)


def _rollback_returns_to_the_version_before(served: dict) -> None:
    if served["labels"]["stable"] != 2:  # v2 was refused by the gate: deploy it anyway
        forced = run_fjord("model", "deploy", "fraud", "--project", "fraud", "--version", "2", "--force")
        assert forced.returncode == 0 and "deployed fraud v2 as stable" in forced.stdout, forced.stderr[
            -2000:
        ]
    rolled = run_fjord("model", "rollback", "fraud", "--project", "fraud")
    assert rolled.returncode == 0 and "stable rolled back from v2 to v1" in rolled.stdout, rolled.stderr[
        -2000:
    ]
    status = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    assert status["labels"] == {"stable": 1} and status["versions"].get("1") == "AVAILABLE"


def _a_worse_model_is_refused_and_nothing_changes(served: dict) -> None:
    """A registered version that scores every transaction the same (ROC AUC 0.5) never replaces the
    champion: the deployment job exits 3 with both figures, and the served versions stay."""
    import os
    import subprocess
    import sys

    from fjord.experiment.tracking import client, tracking_uri
    from fjord.projects import get_project

    mlflow = client(tracking_uri())
    champion = mlflow.get_model_version_by_alias("fraud", "champion")
    logged = champion.source.rsplit("/", 1)[-1]  # models:/m-<id>: the logged model the version points at
    worse = mlflow.create_model_version(
        "fraud", champion.source, run_id=champion.run_id, tags=champion.tags, model_id=logged
    )
    project = get_project("fraud")
    _constant_model(
        _feature_names(project, champion.version), Path(project.fs.path(f"Models/fraud/{worse.version}"))
    )
    deploy = subprocess.run(
        [sys.executable, "-m", "jobs.serve.main", "--project", "fraud", "--version", str(worse.version)],
        capture_output=True, text=True, env=dict(os.environ), timeout=600,
    )  # fmt: skip
    assert deploy.returncode == 3, deploy.stderr[-2000:]
    last = deploy.stderr.strip().splitlines()[-1]  # above it, TensorFlow's C++ start-up lines
    assert last.startswith("error: ") and f"fraud v{worse.version} not deployed: ROC AUC 0.5000" in last
    assert "Traceback" not in deploy.stderr
    after = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    assert after["labels"] == served["labels"] and after["versions"] == served["versions"]
    assert mlflow.get_model_version_by_alias("fraud", "champion").version == champion.version
    assert mlflow.get_model_version("fraud", worse.version).tags["fjord.blessing.decision"] == "rejected"


def _feature_names(project, version: str) -> list[str]:
    from jobs.serve.backends import read_signature_defs, signatures_of

    local = Path(project.fs.path(f"Models/fraud/{version}"))
    return sorted(signatures_of(read_signature_defs(local))["serving_default"].inputs)


def _constant_model(features: list[str], target: Path) -> None:
    import tensorflow as tf

    class Constant(tf.Module):
        @tf.function(input_signature=[{name: tf.TensorSpec([None], tf.float32, name) for name in features}])
        def serve(self, inputs):
            first = inputs[features[0]]
            return {"fraud_probability": tf.zeros_like(first) + 0.5}

    model = Constant()
    tf.saved_model.save(model, str(target), signatures={"serving_default": model.serve})
    (target / "_SUCCESS").write_text("{}")


def _mlflow_loads_the_champion() -> None:
    """Every registered version is a real MLflow model: MLflow's own loader scores with it."""
    import mlflow
    import pandas as pd

    from fjord.experiment.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model("models:/fraud@champion")
    columns = [c.name for c in model.metadata.get_input_schema().inputs]
    scores = model.predict(pd.DataFrame({c: [1.0, 2.0] for c in columns}))
    assert list(scores.columns) == ["fraud_probability"] and len(scores) == 2

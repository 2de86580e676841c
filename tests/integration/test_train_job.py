"""The training job's bad input: each is a one-line error, with nothing trained or registered."""

from __future__ import annotations

import pytest

import featurestore
from fjord.errors import NotFoundError
from fjord.lineage import list_runs
from fjord.projects import create_project
from jobs.train.job import TrainError, TrainSpec, run
from tests.conftest import run_fjord

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture
def project(spark, tracking):
    import pandas as pd

    project = create_project("fraud")
    store = featurestore.connect("fraud")
    times = pd.date_range("2026-11-01", periods=200, freq="min", tz="UTC")
    labels = store.get_or_create_feature_group("labels", 1, primary_key=["tid"], event_time="ts")
    labels.insert(
        pd.DataFrame({"tid": range(200), "ts": times, "is_fraud": [i % 20 == 0 for i in range(200)]})
    )
    features = store.get_or_create_feature_group("tx", 1, primary_key=["tid"], event_time="ts")
    features.insert(pd.DataFrame({"tid": range(200), "ts": times, "amount": [float(i) for i in range(200)]}))
    query = labels.select(["is_fraud"]).join(features.select(["amount"]), on=["tid"])
    store.get_or_create_feature_view("fraud_demo", 1, query=query, labels=["is_fraud"])
    return project


def _nothing_trained() -> None:
    assert list_runs("fraud", "experiment") == []
    assert all(run.stage != "train" or run.status == "failed" for run in list_runs("fraud"))


def test_a_missing_training_dataset_version_is_named(project):
    with pytest.raises(TrainError, match=r"has no training dataset version 7 \(it has none\)"):
        run(TrainSpec(project="fraud", training_dataset_version=7))
    with pytest.raises(TrainError, match="has no training dataset"):
        run(TrainSpec(project="fraud"))
    _nothing_trained()


def test_a_split_without_fraud_rows_is_named_before_training(project):
    """The README's small demo once failed after 83 s with "non-finite value for val_auc": its
    validation split held no fraud row. The job names the splits and stops before any trial."""
    import pandas as pd

    store = featurestore.connect("fraud")
    times = pd.date_range("2026-11-01", periods=200, freq="min", tz="UTC")
    early = store.get_or_create_feature_group("early", 1, primary_key=["tid"], event_time="ts")
    early.insert(pd.DataFrame({"tid": range(200), "ts": times, "is_fraud": [i < 10 for i in range(200)]}))
    query = early.select(["is_fraud"]).join(store.get_feature_group("tx", 1).select(["amount"]), on=["tid"])
    store.get_or_create_feature_view("fraud_demo", 2, query=query, labels=["is_fraud"]).create_training_data()
    with pytest.raises(
        TrainError, match=r"validation: 0 positive, 32 negative; test: 0 positive, 40 negative"
    ):
        run(TrainSpec(project="fraud", feature_view_version=2))
    _nothing_trained()


def test_a_missing_feature_view_is_named(project):
    with pytest.raises(TrainError, match=r"unknown feature view fraud\.fraud_demo version 9"):
        run(TrainSpec(project="fraud", feature_view_version=9))


def test_an_unreachable_mlflow_stops_the_job_before_training(project, monkeypatch):
    store = featurestore.connect("fraud")
    store.get_feature_view("fraud_demo", 1).create_training_data()
    monkeypatch.setenv("FJORD_MLFLOW__TRACKING_URI", "http://127.0.0.1:9")
    result = run_fjord_main("--project", "fraud")
    assert result.returncode == 9
    assert result.stderr.strip().count("\n") == 0 and "http://127.0.0.1:9 is unreachable" in result.stderr
    _nothing_trained()


def run_fjord_main(*args: str):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "jobs.train.main", *args], capture_output=True, text=True, env=dict(os.environ)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--project", "fraud", "--samples", "0"], "--samples: Input should be greater than or equal to 1"),
        (
            ["--project", "fraud", "--tolerance", "-1"],
            "--tolerance: Input should be greater than or equal to 0",
        ),
        (["--project", "fraud", "--test-size", "abc"], "--test-size: Input should be a valid number"),
        (["--project", "nope"], "unknown project 'nope'"),
    ],
)
def test_bad_arguments_get_one_line(project, args, message):
    result = run_fjord_main(*args)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr


def test_cli_lists_no_experiments_for_an_untrained_project(project):
    listed = run_fjord("experiment", "list", "--project", "fraud")
    assert listed.returncode == 0 and "experiment-" not in listed.stdout


def test_a_published_model_version_is_never_written_over(project, tmp_path):
    """A new MLflow numbers versions from 1 again; Models/<name>/1 of the old one is being served.
    Registering refuses (exit 4, one line), deletes the MLflow version it made, and leaves the
    directory as it was."""
    import mlflow
    import pandas as pd
    import tensorflow as tf

    from fjord.errors import AlreadyExistsError
    from fjord.experiment.tracking import client, tracking_uri
    from jobs.train.job import _register

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="amount")])
        def serve(self, amount):
            return {"fraud_probability": amount * 0 + 0.5}

    module = Constant()
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": module.serve})
    name = "collide"
    with project.fs.publish(f"Models/{name}/1") as out:
        out.write_text("fjord-model.json", '{"run_id": "the served one"}')
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("collide")
    with mlflow.start_run() as trial:
        pass
    with pytest.raises(AlreadyExistsError) as refused:
        _register(TrainSpec(project="fraud", model_name=name), project, tmp_path / "model", trial.info.run_id,
                  uri, "train-1", 1, {}, None, {}, pd.DataFrame({"amount": [1.0, 2.0]}))  # fmt: skip
    assert refused.value.exit_code == 4
    assert "MLflow numbered this model collide v1, but" in refused.value.one_line()
    assert project.fs.read_text(f"Models/{name}/1/fjord-model.json") == '{"run_id": "the served one"}'
    assert client(uri).search_model_versions(f"name='{name}'") == []


def test_a_retry_after_a_kill_past_registration_reuses_the_version_instead_of_training(project, tmp_path):
    """The task's job registered and published a version, then was killed before its completion was
    recorded: the retry under the same run id returns that version, trains nothing, registers nothing."""
    import mlflow
    import pandas as pd
    import tensorflow as tf

    from fjord.experiment.tracking import client, tracking_uri
    from jobs.train.job import _register

    class Constant(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="amount")])
        def serve(self, amount):
            return {"fraud_probability": amount * 0 + 0.5}

    module = Constant()
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": module.serve})
    featurestore.connect("fraud").get_feature_view("fraud_demo", 1).create_training_data()
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("retried")
    with mlflow.start_run() as trial:
        pass
    spec = TrainSpec(project="fraud", model_name="retried", run_id="train-af-0123456789abcdef")
    metrics = {"roc_auc": 0.9, "pr_auc": 0.5, "precision": 0.4, "recall": 0.3, "threshold": 0.5, "brier": 0.1}
    version, model_uri = _register(spec, project, tmp_path / "model", trial.info.run_id, uri, spec.run_id, 1,
                                   metrics, None, {"lr": 0.01}, pd.DataFrame({"amount": [1.0]}),
                                   {"search": "experiment-1", "trials": {"succeeded": 2}})  # fmt: skip
    result = run(spec)
    assert (result.model_version, result.model_uri, result.metrics["roc_auc"]) == (version, model_uri, 0.9)
    assert result.training_dataset_version == 1 and result.trials == {"succeeded": 2}
    assert len(client(uri).search_model_versions("name='retried'")) == 1  # nothing registered again
    assert list_runs("fraud", "experiment") == []  # nothing trained


def test_a_kill_between_mlflow_and_the_published_directory_leaves_nothing_deployable(project):
    """Killed after MLflow numbered the version, before Models/<name>/<n> was published and the
    candidate alias set: deploy finds no candidate, refuses the version by number, and the next
    registration publishes the next version whole. Then a deploy killed mid-way is undone by the next."""
    import os
    import subprocess
    import sys

    from fjord.experiment.tracking import client, tracking_uri
    from fjord.faults import CRASH_EXIT_CODE
    from jobs.serve.deploy import DeployError, DeploySpec
    from jobs.serve.deploy import run as deploy
    from tests.conftest import REPO

    def register(run_id: str, crash: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "FJORD_CRASH_AT"}
        env.update({"FJORD_CRASH_AT": crash} if crash else {})
        argv = [sys.executable, "-m", "tests.integration.register_worker", "killed", run_id]
        return subprocess.run(
            argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False
        )

    featurestore.connect("fraud").get_feature_view("fraud_demo", 1).create_training_data()
    killed = register("train-af-00000000000000aa", "train.registered")
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    mlflow = client(tracking_uri())
    (orphan,) = mlflow.search_model_versions("name='killed'")
    assert "fjord.serving_path" not in orphan.tags and not project.fs.exists("Models/killed/1")
    with pytest.raises(DeployError, match="has no candidate"):
        deploy(DeploySpec(project="fraud", model_name="killed"))
    with pytest.raises(NotFoundError, match="has no published version 1"):
        deploy(DeploySpec(project="fraud", model_name="killed", version=1))
    from tests.integration.register_worker import main as register_here

    register_here("killed", "train-af-00000000000000bb")  # the retry, in this process
    assert project.fs.is_published("Models/killed/2")
    assert mlflow.get_model_version_by_alias("killed", "candidate").version == "2"

    # A deploy killed after it configured the serving, before the server loaded the version: the
    # next deploy (the task's retry) puts the serving back first; here there was none before.
    from jobs.serve import serving

    env = {**os.environ, "FJORD_CRASH_AT": "deploy.configured"}
    argv = [sys.executable, "-m", "jobs.serve.main", "--project", "fraud", "--model-name", "killed"]
    crashed = subprocess.run(
        argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False
    )
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-2000:]
    assert serving.get_serving("killed", project="fraud").labels == {"stable": 2}  # half done
    assert deploy(DeploySpec(project="fraud", model_name="killed", bless_only=True)).deployed is False
    assert not serving.exists("killed", project="fraud")  # as it was before the killed deploy


def test_a_candidate_better_on_the_held_out_split_but_worse_on_replayed_traffic_is_refused(project):
    """The training data's fraud is an amount that is a multiple of 20; production's fraud has moved
    to amounts ending in 10 (and multiples of 20 are common and honest). A candidate that flags
    multiples of 20 beats the constant champion on the held-out split (ROC AUC 1.0 against 0.5) and
    is blessed by it alone; replayed on the serving's labelled traffic it ranks worse than what was
    served, and the gate refuses it (exit 20), with its figures on MLflow, the serving unchanged. A
    kill during the replay changes nothing either."""
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime

    import numpy as np
    import pandas as pd

    from fjord.experiment.tracking import client, tracking_uri
    from fjord.faults import CRASH_EXIT_CODE
    from jobs.serve import serving
    from jobs.serve.deploy import DeployRejected, DeploySpec
    from jobs.serve.deploy import run as deploy
    from tests.conftest import REPO
    from tests.integration.monitor_setup import archive_calls
    from tests.integration.register_worker import main as register

    featurestore.connect("fraud").get_feature_view("fraud_demo", 1).create_training_data()
    register("moved", "train-af-00000000000000c1", "constant")  # v1, the champion, served
    register("moved", "train-af-00000000000000c2", "every_20th")  # v2, the candidate
    mlflow = client(tracking_uri())
    mlflow.set_registered_model_alias("moved", "champion", "1")
    serving.create_or_update("moved", 1, project="fraud", passthrough=["tid"])
    before = {name: project.fs.read_bytes(name) for name in (serving.SERVINGS_FILE, serving.CONFIG_FILE)}

    # the last hour's traffic, served by v1 (0.5 for all), and its labels
    rng = np.random.default_rng(5)
    amounts = np.where(rng.random(600) < 0.3, 20.0 * rng.integers(1, 50, 600), rng.integers(1, 999, 600))
    fraud = (amounts % 20 == 10).astype("int64")
    tids = np.arange(50_000, 50_600)
    at_ms = int(datetime.now(UTC).timestamp() * 1000) - 3_600_000
    archive_calls(project, "moved", {"amount": amounts}, {"fraud_probability": np.full(600, 0.5)}, tids,
                  at_ms=at_ms, per_call=6)  # fmt: skip
    labels = featurestore.connect("fraud").get_or_create_feature_group(
        "fraud_labels", 1, primary_key=["tid"], event_time="ts"
    )
    labels.insert(pd.DataFrame({"tid": tids, "ts": pd.Timestamp.now(tz="UTC"), "is_fraud": fraud}))

    static = deploy(DeploySpec(project="fraud", model_name="moved", version=2, bless_only=True))
    assert static.blessing["decision"] == "blessed"  # the held-out split alone would let it through
    assert (static.blessing["candidate"], static.blessing["champion"]) == (1.0, 0.5)

    argv = [sys.executable, "-m", "jobs.serve.main", "--project", "fraud", "--model-name", "moved",
            "--version", "2", "--bless-only", "--replay-hours", "24"]  # fmt: skip
    env = {**os.environ, "FJORD_CRASH_AT": "replay.scored"}
    killed = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    assert {name: project.fs.read_bytes(name) for name in before} == before

    refused = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert refused.returncode == DeployRejected.exit_code, refused.stderr[-2000:]
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert "moved v2 not deployed: on replayed traffic of moved, realized ROC AUC" in line
    tags = mlflow.get_model_version("moved", "2").tags
    assert tags["fjord.replay.decision"] == "refused" and tags["fjord.blessing.decision"] == "rejected"
    assert {name: project.fs.read_bytes(name) for name in before} == before
    assert serving.get_serving("moved", project="fraud").labels == {"stable": 1}

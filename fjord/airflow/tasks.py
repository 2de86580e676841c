"""Task groups more than one DAG is wired from (so ``fraud_training_pipeline`` and ``fraud_retrain``
train, bless and deploy the same way, through the same gate)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from fjord.airflow.operators import FjordJobOperator

PROJECT = "{{ params.project }}"


def xcom(task_id: str, key: str) -> str:
    """A template pulling ``key`` of ``task_id``'s result (rendered when the task runs)."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}')['{key}'] }}}}"


def training_dataset(**args: Any) -> FjordJobOperator:
    """The features job: the view (created if needed) and a new training dataset version."""
    return FjordJobOperator(
        task_id="training_dataset",
        stage="features",
        args={"project": PROJECT, "view": "{{ params.feature_view }}", **args},
        doc_md="The feature view and a new point-in-time training dataset version (its commits recorded).",
    )


def train_bless_deploy(
    dataset_task: str = "training_dataset", replay_hours: float | None = None
) -> TaskGroup:
    """``model``: search + train + evaluate + optimize + register -> the gate -> deployment. With
    ``replay_hours``, the gate also replays the candidate on the serving's traffic of those last hours
    (jobs/serve/replay.py) and refuses it on the replay's rules."""
    replay = {"replay_hours": replay_hours} if replay_hours else {}
    with TaskGroup("model", tooltip="search, train, evaluate, optimize, register; bless; deploy") as group:
        train = FjordJobOperator(
            task_id="train",
            stage="train",
            args={
                "project": PROJECT,
                "feature_view": "{{ params.feature_view }}",
                "training_dataset_version": xcom(dataset_task, "training_dataset_version"),
                "samples": "{{ params.samples }}",
                "epochs": "{{ params.epochs }}",
            },
            execution_timeout=timedelta(hours=2),
            doc_md="Random search with early stopping on Spark executors, the best configuration retrained, "
            "evaluated on held-out later rows, optimized (TFLite) and registered in MLflow as `candidate`.",
        )
        version = xcom("model.train", "model_version")
        bless = FjordJobOperator(
            task_id="bless",
            stage="bless",
            args={"project": PROJECT, "version": version, "bless_only": True, **replay},
            doc_md="The gate: the candidate against the champion on the candidate's held-out rows (and, "
            "when set, replayed on the traffic the champion served). Refused: deploy is skipped and the "
            "champion keeps serving.",
        )
        deploy = FjordJobOperator(
            task_id="deploy",
            stage="deploy",
            args={
                "project": PROJECT,
                "version": version,
                "feature_view": "fraud_serving",
                "transformer": "jobs.serve.transformers:fraud_transactions",
                # the ETL's transaction rules: a request that breaks one is served, and counted
                "input_rules": "transactions",
                "input_rules_mode": "flag",
                # the transaction id: logged with each call, joins a prediction to its label later
                "passthrough": ["tid"],
                **replay,
            },
            doc_md="Serve the blessed version (TF Serving's REST and gRPC), smoke-test it, move `champion`.",
        )
        train >> bless >> deploy
    return group

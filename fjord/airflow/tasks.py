"""The DAGs' tasks, built from the one pipeline definition (fjord/pipeline.py): a step becomes a
:class:`FjordJobOperator` whose arguments are templates (a run parameter is ``{{ params.x }}``, an
earlier step's result an XCom pull), rendered when the task runs. ``fraud_training_pipeline`` and
``fraud_retrain`` train, bless and deploy through the same task group, so through the same gate."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TaskGroup

from fjord.airflow.operators import FjordJobOperator
from fjord.pipeline import Step, TrainingPipeline

TRAIN_TIMEOUT = timedelta(hours=2)


def xcom(task_id: str, key: str) -> str:
    """A template pulling ``key`` of ``task_id``'s result (rendered when the task runs)."""
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}')['{key}'] }}}}"


def param(name: str) -> str:
    return f"{{{{ params.{name} }}}}"


def job(step: Step, *, args: dict[str, Any] | None = None, **operator: Any) -> FjordJobOperator:
    """The operator running ``step``'s stage job (``args`` added to the step's own)."""
    return FjordJobOperator(
        task_id=step.name,
        stage=step.stage,
        args=step.arguments(param, xcom, **(args or {})),
        doc_md=step.doc,
        **operator,
    )


def params(pipeline: TrainingPipeline) -> dict[str, Param]:
    """The run parameters every training DAG takes, their defaults the project's settings."""
    defaults = pipeline.defaults()
    return {
        "project": Param(defaults["project"], type="string", description="the Fjord project"),
        "samples": Param(defaults["samples"], type="integer", minimum=1, description="random-search trials"),
        "epochs": Param(defaults["epochs"], type="integer", minimum=1, description="epochs per trial"),
        "feature_view": Param(defaults["feature_view"], type="string", description="the view to train on"),
        "cache": Param(
            True,
            type="boolean",
            description="false: run every step, even one whose earlier run had the same inputs, code, "
            "environment and arguments (fjord/stepcache.py)",
        ),
    }


def training_dataset(pipeline: TrainingPipeline, **args: Any) -> FjordJobOperator:
    """The features job: the view (created if needed) and a new training dataset version."""
    return job(pipeline.step("training_dataset"), args=args)


def train_bless_deploy(pipeline: TrainingPipeline) -> TaskGroup:
    """``model``: search + train + evaluate + optimize + register -> the gate -> deployment."""
    train, bless, deploy = (pipeline.step(f"model.{name}") for name in ("train", "bless", "deploy"))
    with TaskGroup("model", tooltip="search, train, evaluate, optimize, register; bless; deploy") as group:
        trained = job(train, execution_timeout=TRAIN_TIMEOUT)
        trained >> job(bless) >> job(deploy)
    return group

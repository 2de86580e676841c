"""fraud_batch_inference: each day, score the previous day's rows of the feature view with the
champion model, as a new version of ``Resources/predictions/fraud/`` with its lineage (model version,
feature commits). A rerun of the same day, model and commits publishes nothing new."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fjord.airflow.defaults import cron, dag_arguments
from fjord.airflow.operators import FjordJobOperator
from fjord.pipeline import load_pipeline_config

SETTINGS = load_pipeline_config()

with DAG(
    dag_id="fraud_batch_inference",
    description="Daily batch scoring of the fraud feature view with the champion",
    doc_md=__doc__,
    schedule=cron("0 4 * * *"),
    **dag_arguments(tags=["fraud", "inference"]),
    params={
        "project": Param(SETTINGS.project, type="string", description="the Fjord project"),
        "feature_view": Param(
            SETTINGS.feature_view, type="string", description="the view whose batch data is scored"
        ),
        "start_time": Param(None, type=["null", "string"], description="default: the day before the run"),
        "end_time": Param(None, type=["null", "string"], description="default: the run's day"),
    },
) as dag:
    FjordJobOperator(
        task_id="score",
        stage="batch_inference",
        args={
            "project": "{{ params.project }}",
            "model_name": SETTINGS.model,
            "feature_view": "{{ params.feature_view }}",
            "start_time": "{{ params.start_time or macros.ds_add(dag_run.run_after | ds, -1) }}",
            "end_time": "{{ params.end_time or (dag_run.run_after | ds) }}",
        },
        doc_md="Score the window with the model `champion` points at; a versioned, traceable dataset.",
    )

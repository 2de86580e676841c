"""fraud_training_pipeline: landing batches -> ETL + validation -> training data -> train -> bless ->
deploy, and beside them the realized performance of what is served (the labels just landed) and its
training/serving skew (the served inputs against the features just computed for the same rows).
Daily, or triggered with conf (``{"project": "fraud", "batches": ["2026-11-01"]}``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, TaskGroup, task

from fjord.airflow.client import skew_asset
from fjord.airflow.defaults import cron, dag_arguments
from fjord.airflow.operators import FjordJobOperator
from fjord.airflow.sensors import SharedFileSensor
from fjord.airflow.tasks import job, params, train_bless_deploy, training_dataset
from fjord.pipeline import load_pipeline_config, training_pipeline

PIPELINE = training_pipeline(load_pipeline_config())  # the steps, and the demo's settings
LANDING = "Resources/landing"
PERFORMANCE, SKEW = PIPELINE.measure

with DAG(
    dag_id="fraud_training_pipeline",
    description="Land, validate, featurize, train, bless and deploy the fraud model",
    doc_md=__doc__,
    schedule=cron("@daily"),
    # A scheduled run may wait hours for its day's batch (deferred, holding no slot): triggered runs
    # go ahead meanwhile.
    **dag_arguments(tags=["fraud", "training"], max_active_runs=3),
    params={
        **params(PIPELINE),
        "batches": Param(
            [], type="array", description="landing batches (YYYY-MM-DD), oldest first; default: the run's day"
        ),
        "train": Param(True, type="boolean", description="false: ingest and measure only"),
    },
) as dag:

    @task(doc_md="The batches this run ingests: `batches` from the conf, else the day before the run.")
    def batches_to_ingest(params: dict | None = None, dag_run: Any = None) -> list[dict[str, Any]]:
        params = params or {}
        chosen = list(params.get("batches") or [(dag_run.run_after - timedelta(days=1)).date().isoformat()])
        args = [{**params, "batch": batch} for batch in sorted(chosen)]
        return [PIPELINE.ingest.arguments(values.__getitem__, _no_result) for values in args]

    with TaskGroup("ingest", tooltip="wait for each batch, then ETL + validation, one task per batch"):
        wanted = batches_to_ingest()
        landed = SharedFileSensor.partial(
            task_id="wait_for_batch",
            doc_md="Deferrable: waits on the triggerer for the batch's `_SUCCESS` marker.",
            poke_interval=10,
            timeout=6 * 3600,
            retries=1,
        ).expand_kwargs(
            wanted.map(lambda b: {"project": b["project"], "path": f"{LANDING}/{b['batch']}/_SUCCESS"})
        )
        etl = FjordJobOperator.partial(
            task_id=PIPELINE.ingest.name,
            stage=PIPELINE.ingest.stage,
            doc_md=PIPELINE.ingest.doc,
            max_active_tis_per_dagrun=1,  # in date order: each batch's windows read the previous ones
            max_active_tis_per_dag=1,  # and one at a time across runs (the job recomputes later batches)
        ).expand(args=wanted)
        landed >> etl

    performance = job(PERFORMANCE)
    # An inlet, so that Airflow knows the asset the job posts skew alerts on (an outlet would post an
    # event on every success); no DAG of ours is scheduled on it.
    alerts = Asset(skew_asset(PIPELINE.config.project, PIPELINE.config.model), group="monitoring")
    skew = job(SKEW, inlets=[alerts])

    @task.short_circuit(
        doc_md="Whether this run trains (`train`, default true). An ingest-only run "
        "publishes the batches, measures performance and skew, and stops here."
    )
    def train_wanted(params: dict | None = None) -> bool:
        return bool((params or {}).get("train", True))

    dataset = training_dataset(PIPELINE)
    model = train_bless_deploy(PIPELINE)

    etl >> [performance, skew]
    etl >> train_wanted() >> dataset >> model


def _no_result(task: str, key: str) -> Any:
    raise ValueError(f"the ingest step takes no result ({task}.{key})")

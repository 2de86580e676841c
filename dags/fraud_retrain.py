"""fraud_retrain: when the monitor reports drift (an event on the Asset ``fjord://drift/fraud/fraud``,
project and model) or the performance job finds the realized ROC AUC below the blessed one
(``fjord://performance/fraud/fraud``), and weekly: a training dataset over a recent window, a new model, and a
deployment only through the same blessing gate. A run started by an asset event records the event
(its window and scores) as the cause, in the DAG run's record (``fjord lineage show``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, Param, task

from fjord.airflow.client import drift_asset, performance_asset
from fjord.airflow.defaults import cron, dag_arguments
from fjord.airflow.tasks import params, train_bless_deploy, training_dataset
from fjord.pipeline import load_pipeline_config, training_pipeline

SETTINGS = load_pipeline_config()
# the gate replays the candidate on the last day's traffic before it deploys (jobs/serve/replay.py)
PIPELINE = training_pipeline(SETTINGS, replay_hours=SETTINGS.retrain.replay_hours)
DRIFT = Asset(drift_asset(SETTINGS.project, SETTINGS.model), group="monitoring")
PERFORMANCE = Asset(performance_asset(SETTINGS.project, SETTINGS.model), group="monitoring")

with DAG(
    dag_id="fraud_retrain",
    description="Retrain the fraud model on a recent window when its inputs drift, and weekly",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(timetable=cron("0 3 * * 0"), assets=DRIFT | PERFORMANCE),
    **dag_arguments(tags=["fraud", "retraining"]),
    params={
        **params(PIPELINE),
        "window_days": Param(
            SETTINGS.retrain.window_days, type="integer", minimum=1, description="days of data to retrain on"
        ),
    },
) as dag:

    @task(doc_md="Why this run started (the drift event, or the weekly schedule) and the data window.")
    def cause(params: dict[str, Any] | None = None, triggering_asset_events: Any = None,
              dag_run: Any = None) -> dict[str, Any]:  # fmt: skip
        from fjord.airflow.hook import record_dag_run_cause

        events = []
        for asset_events in (triggering_asset_events or {}).values():
            for event in asset_events:
                events.append({
                    "asset": event.asset.uri, "id": getattr(event, "id", None),
                    "timestamp": event.timestamp.isoformat(), "extra": dict(event.extra or {}),
                })  # fmt: skip
        params = params or {}
        ends = [e["extra"].get("window_end") for e in events if e["extra"].get("window_end")]
        end = datetime.fromisoformat(max(ends)) if ends else datetime.now(UTC)
        start = end - timedelta(days=int(params["window_days"]))
        reason = {
            "trigger": "asset event" if events else "schedule",
            "events": events,
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
        }
        record_dag_run_cause(params["project"], dag_run.dag_id, dag_run.run_id, reason)
        return reason

    why = cause()
    dataset = training_dataset(PIPELINE, start_time="{{ ti.xcom_pull(task_ids='cause')['start_time'] }}")
    model = train_bless_deploy(PIPELINE)
    why >> dataset >> model

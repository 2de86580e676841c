"""What every Fjord task has: retries with exponential back-off, a timeout, and a failure callback
that writes why the task failed into its run record (so ``fjord lineage`` shows Airflow's reason
beside the job's own, even when the job never got to write one: a timeout, a killed worker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable

from fjord.errors import NotFoundError
from fjord.lineage import get_run, new_record, save_run
from fjord.projects import get_project


def record_failure(context: Any) -> None:
    """``on_failure_callback``: mark the task's run record failed, with the exception and the try."""
    from fjord.airflow.client import dag_run_record_id, task_run_id

    task, ti = context["task"], context["ti"]
    stage = getattr(task, "stage", None)
    args = getattr(task, "args", None) or {}
    if stage is None or "project" not in args:
        return  # a sensor or a plain task: Airflow's own log is the record
    project = get_project(str(args["project"]))
    run_id = task_run_id(stage, ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
    try:
        record = get_run(run_id)
    except NotFoundError:
        record = new_record(
            project, stage, run_id=run_id, parent_run_id=dag_run_record_id(ti.dag_id, ti.run_id)
        )
    exception = context.get("exception")
    record.status = "failed"
    record.error = " ".join(str(exception).split())[:1000] if exception else "failed in Airflow"
    record.ended_at = datetime.now(UTC)
    record.params["airflow"] = {
        "dag_id": ti.dag_id,
        "dag_run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
    }
    save_run(project, record)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "fjord",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": record_failure,
}


def dag_arguments(**overrides: Any) -> dict[str, Any]:
    """What every Fjord DAG shares: no catch-up, one run at a time, the task defaults above, and the
    ``fjord`` tag (``overrides`` win; ``tags`` are added to it).

    No ``start_date``: with one, unpausing a DAG runs its most recent past interval at once (a whole
    retraining the moment ``fraud_retrain`` is switched on). Give a cron schedule with ``cron()``, so
    that its first run is its next time."""
    tags = ["fjord", *overrides.pop("tags", [])]
    return {
        "catchup": False,
        "max_active_runs": 1,
        "default_args": DEFAULT_ARGS,
        "tags": tags,
        **overrides,
    }


def cron(expression: str) -> CronTriggerTimetable:
    """A cron schedule (UTC) whose first run, once the DAG is unpaused, is its next time, never one
    already past.

    Airflow 3.3's ``CronTriggerTimetable`` treats ``run_immediately=False`` (its default, and what a
    plain ``schedule="@daily"`` gets) like ``None``: a DAG unpaused within 10% of its period after a
    trigger time runs that past time at once (apache/airflow#64162, open). So ``fraud_retrain``
    (weekly, Sunday 03:00) switched on by a fresh ``fjord up`` on a Sunday before 19:48 started a
    whole scheduled retraining, and with one run at a time the drift alert's run waited behind it. A
    zero ``timedelta`` is the documented "only if it is exactly now"."""
    return CronTriggerTimetable(expression, timezone="UTC", run_immediately=timedelta(0))

"""serving_canary: every hour, the canary rule for a serving (jobs/serve/canary.py). Over at least
``min_requests`` calls since the canary started, its error rate, p99 latency and estimated and
realized ROC AUC against the stable version's: promote it to stable, or roll it back. With fewer
calls, the run records "wait" and changes nothing. The decision and its figures are the task's
result (XCom) and a run record (``fjord lineage show``); with no canary, the task fails with that
one line, and nothing changes."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fjord.airflow.defaults import cron, dag_arguments
from fjord.airflow.operators import FjordJobOperator

with DAG(
    dag_id="serving_canary",
    description="Promote a serving's canary or roll it back, on its production figures",
    doc_md=__doc__,
    schedule=cron("25 * * * *"),
    **dag_arguments(tags=["serving", "canary"]),
    params={
        "project": Param("fraud", type="string", description="the Fjord project"),
        "serving": Param("fraud", type="string", description="the serving with a canary"),
        "min_requests": Param(500, type="integer", minimum=1, description="calls a decision needs"),
    },
) as dag:
    FjordJobOperator(
        task_id="decide",
        stage="canary",
        args={
            "project": "{{ params.project }}",
            "serving": "{{ params.serving }}",
            "min_requests": "{{ params.min_requests }}",
        },
        doc_md="The canary rule: promote, roll back, or wait (its figures in the result).",
    )

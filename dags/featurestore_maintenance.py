"""featurestore_maintenance: weekly compaction and vacuum of every feature group of the project.
Compaction rewrites each group's small files into few large ones (a new commit, same data); vacuum
deletes removed files older than the retention, except those of every commit a training dataset
names and of the latest commit, so time travel to any dataset's inputs keeps working."""

from __future__ import annotations

from airflow.sdk import DAG, Param

from fjord.airflow.defaults import cron, dag_arguments
from fjord.airflow.operators import FjordJobOperator

with DAG(
    dag_id="featurestore_maintenance",
    description="Compact and vacuum the feature groups' Delta tables",
    doc_md=__doc__,
    schedule=cron("0 2 * * 6"),
    **dag_arguments(tags=["featurestore", "maintenance"]),
    params={
        "project": Param("fraud", type="string", description="the Fjord project"),
        "retention_hours": Param(168, type="number", minimum=0, description="keep removed files this long"),
    },
) as dag:
    FjordJobOperator(
        task_id="compact_and_vacuum",
        stage="maintenance",
        args={"project": "{{ params.project }}", "retention_hours": "{{ params.retention_hours }}"},
        doc_md="Compact, then vacuum, every writable group of the project (one run record).",
    )

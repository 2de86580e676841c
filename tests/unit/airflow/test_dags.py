"""The DAG files as Airflow's DagBag loads them: no import errors or warnings, and the structure the
platform promises (dependencies, retries with back-off, timeouts, docs, failure callbacks, schedules).

The DagBag is filled in a subprocess with its own AIRFLOW_HOME, as the dag-processor would, and the
structure comes back as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

_INSPECT = r"""
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder=sys.argv[1])
def uris(condition):
    if condition is None:
        return []
    if hasattr(condition, "uri"):
        return [condition.uri]
    return [uri for part in getattr(condition, "objects", []) for uri in uris(part)]
def first_runs(dag):
    # As the scheduler sees the DAG (serialized and back): its first run, no run yet and no catch-up,
    # when switched on one minute after each of the four schedules' trigger times.
    import pendulum
    import airflow.timetables.trigger as trigger
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    runs = {}
    for now in ("2026-12-06T00:01:00Z", "2026-12-06T03:01:00Z", "2026-12-06T04:01:00Z",
                "2026-12-05T02:01:00Z"):
        trigger.utcnow = lambda now=pendulum.parse(now): now  # the clock the timetable reads
        info = timetable.next_dagrun_info(last_automated_data_interval=None,
                                          restriction=TimeRestriction(None, None, False))
        runs[now] = info.run_after.isoformat() if info else None
    return runs
dags = {}
for dag_id, dag in bag.dags.items():
    tasks = {}
    for t in dag.tasks:
        tasks[t.task_id] = {
            "type": type(t).__name__,
            "upstream": sorted(t.upstream_task_ids),
            "retries": t.retries,
            "backoff": bool(t.retry_exponential_backoff),
            "timeout_s": t.execution_timeout.total_seconds() if t.execution_timeout else None,
            "doc": bool(t.doc_md),
            "on_failure": bool(t.on_failure_callback),
            "inlets": sorted(getattr(i, "uri", str(i)) for i in t.inlets),
            "stage": getattr(t, "stage", None) or getattr(t, "partial_kwargs", {}).get("stage"),
            "args": getattr(t, "args", None) if type(t).__name__ != "MappedOperator" else None,
        }
    dags[dag_id] = {
        "doc": bool(dag.doc_md), "tags": sorted(dag.tags), "schedule": repr(dag.timetable),
        "assets": sorted(uris(getattr(dag.timetable, "asset_condition", None))),
        "summary": getattr(dag.timetable, "summary", ""), "first_runs": first_runs(dag),
        "params": sorted(dag.params.keys()), "tasks": tasks,
    }
print(json.dumps({"errors": bag.import_errors, "warnings": [str(w.message) for w in caught
                  if "dags/" in str(w.filename)], "dags": dags}))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FJORD_"))},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "FJORD_HOME": str(home / "fjord"),
    }
    done = subprocess.run(
        [sys.executable, "-c", _INSPECT, str(REPO / "dags")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_dag_file_imports_without_errors_or_warnings(dagbag: dict) -> None:
    assert dagbag["errors"] == {}
    assert dagbag["warnings"] == []
    files = sorted(p.stem for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
    assert sorted(dagbag["dags"]) == files  # one DAG per file, named as the file


def test_every_task_retries_with_backoff_times_out_and_is_documented(dagbag: dict) -> None:
    for dag_id, dag in dagbag["dags"].items():
        assert dag["doc"] and "fjord" in dag["tags"], dag_id
        for task_id, task in dag["tasks"].items():
            where = f"{dag_id}.{task_id}"
            assert task["retries"] >= 1 and task["backoff"], where
            assert task["timeout_s"] and task["timeout_s"] <= 3 * 3600, where
            assert task["doc"], where
            assert task["on_failure"], where


def _upstream(dag: dict, task_id: str) -> list[str]:
    return dag["tasks"][task_id]["upstream"]


def test_training_pipeline_waits_validates_trains_blesses_then_deploys(dagbag: dict) -> None:
    dag = dagbag["dags"]["fraud_training_pipeline"]
    assert _upstream(dag, "ingest.wait_for_batch") == ["ingest.batches_to_ingest"]
    assert _upstream(dag, "ingest.etl") == ["ingest.batches_to_ingest", "ingest.wait_for_batch"]
    assert _upstream(dag, "train_wanted") == ["ingest.etl"]  # an ingest-only run stops there
    assert _upstream(dag, "training_dataset") == ["train_wanted"]
    assert _upstream(dag, "model.train") == ["training_dataset"]
    assert _upstream(dag, "model.bless") == ["model.train"]
    assert _upstream(dag, "model.deploy") == ["model.bless"]
    assert _upstream(dag, "performance") == ["ingest.etl"]  # the labels just published, beside training
    assert _upstream(dag, "skew") == ["ingest.etl"]  # the features just computed for the served rows
    assert dag["tasks"]["skew"]["inlets"] == ["fjord://skew/fraud/fraud"]  # Airflow knows its asset
    assert dag["tasks"]["ingest.wait_for_batch"]["type"] == "MappedOperator"  # one per batch
    assert "expression='0 0 * * *'" in dag["schedule"]  # @daily
    assert {"project", "batches", "samples", "epochs"} <= set(dag["params"])


def test_retrain_runs_on_drift_or_a_performance_drop_and_weekly_through_the_same_gate(dagbag: dict) -> None:
    dag = dagbag["dags"]["fraud_retrain"]
    assert dag["assets"] == ["fjord://drift/fraud/fraud", "fjord://performance/fraud/fraud"]
    assert "AssetOrTimeSchedule" in dag["schedule"]
    assert _upstream(dag, "training_dataset") == ["cause"]
    assert _upstream(dag, "model.deploy") == ["model.bless"]


def test_the_training_dags_run_the_one_pipeline_definitions_steps_with_its_arguments(dagbag: dict) -> None:
    """fjord/pipeline.py is the one definition: each job task of both training DAGs is one of its
    steps, same stage and arguments (as templates); ``fjord run --local`` resolves the same steps."""
    from fjord.airflow.tasks import param, xcom
    from fjord.pipeline import load_pipeline_config, training_pipeline

    settings = load_pipeline_config()
    for dag_id, replay in (
        ("fraud_training_pipeline", None),
        ("fraud_retrain", settings.retrain.replay_hours),
    ):
        tasks = dagbag["dags"][dag_id]["tasks"]
        pipeline = training_pipeline(settings, replay_hours=replay)
        for step in pipeline.training:
            extra = {"start_time": "{{ ti.xcom_pull(task_ids='cause')['start_time'] }}"}
            given = extra if dag_id == "fraud_retrain" and step.task_id == "training_dataset" else {}
            expected = json.loads(json.dumps(step.arguments(param, xcom, **given)))
            assert tasks[step.task_id]["stage"] == step.stage, (dag_id, step.task_id)
            assert tasks[step.task_id]["args"] == expected, (dag_id, step.task_id)
    training = dagbag["dags"]["fraud_training_pipeline"]["tasks"]
    assert training["ingest.etl"]["stage"] == pipeline.ingest.stage
    for step in pipeline.measure:
        assert training[step.task_id]["args"] == step.arguments(param, xcom), step.task_id
    deploy = training["model.deploy"]["args"]
    assert deploy["feature_view"] == "fraud_serving" and deploy["passthrough"] == ["tid"]  # the demo's own
    assert (
        "replay_hours" not in deploy
        and dagbag["dags"]["fraud_retrain"]["tasks"]["model.bless"]["args"]["replay_hours"] == 24
    )


def test_a_dag_switched_on_after_its_trigger_time_first_runs_at_the_next_one(dagbag: dict) -> None:
    """Airflow 3.3's cron timetables run a trigger time already past when a DAG is unpaused within 10%
    of its period after it (apache/airflow#64162): a fresh ``fjord up`` on a Sunday morning started a
    whole weekly retraining, and the drift alert's run waited behind it."""
    for dag_id, dag in dagbag["dags"].items():
        for now, first in dag["first_runs"].items():
            assert first is not None and datetime.fromisoformat(first) > datetime.fromisoformat(now), (
                f"{dag_id} switched on at {now} first runs at {first}"
            )


def test_dags_import_no_stage_job(dagbag: dict) -> None:
    """Wiring only: a DAG file names stages by their job, it does not import their code."""
    for path in (REPO / "dags").glob("*.py"):
        text = path.read_text()
        assert "from jobs" not in text and "import jobs" not in text, path.name
        assert "from featurestore" not in text, path.name
    assert Path(REPO / "dags" / "README.md").exists()


def test_batch_inference_and_maintenance_run_their_stage_jobs_on_schedule(dagbag: dict) -> None:
    scoring = dagbag["dags"]["fraud_batch_inference"]
    assert list(scoring["tasks"]) == ["score"] and "0 4 * * *" in scoring["schedule"]
    upkeep = dagbag["dags"]["featurestore_maintenance"]
    assert list(upkeep["tasks"]) == ["compact_and_vacuum"] and "0 2 * * 6" in upkeep["schedule"]

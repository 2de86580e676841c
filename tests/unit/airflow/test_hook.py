"""The hook: stable run ids, a spec's fields as options, exit codes as Airflow outcomes, the REST
client's one-line errors when Airflow cannot be reached, and a task's completion (one real job run
as a process, killed at its last step)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from fjord.airflow.client import AirflowClient, AirflowError, dag_run_record_id, task_run_id
from fjord.airflow.hook import STAGES, FjordJobHook, _error_line, _options, _outcome
from fjord.jobspec import JobSpec


def test_run_ids_are_stable_per_task_and_valid_job_spec_ids() -> None:
    first = task_run_id(
        "etl", "fraud_training_pipeline", "manual__2026-12-03T11:49:32+00:00", "ingest.etl", 0
    )
    again = task_run_id(
        "etl", "fraud_training_pipeline", "manual__2026-12-03T11:49:32+00:00", "ingest.etl", 0
    )
    other = task_run_id(
        "etl", "fraud_training_pipeline", "manual__2026-12-03T11:49:32+00:00", "ingest.etl", 1
    )
    assert first == again != other and first.startswith("etl-af-")
    parent = dag_run_record_id("fraud_training_pipeline", "manual__2026-12-03T11:49:32+00:00")
    JobSpec(run_id=first, parent_run_id=parent)  # the jobs accept them


def test_a_spec_becomes_the_jobs_options() -> None:
    assert _options({"project": "fraud", "samples": 4, "bless_only": True, "optimize": False, "x": None}) == [
        "--project", "fraud", "--samples", "4", "--bless-only", "--no-optimize",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "code", "outcome"),
    [
        ("etl", 2, AirflowFailException),  # bad input: no retry helps
        ("etl", 19, AirflowFailException),  # a rejected batch: the data must change first
        ("features", 3, AirflowFailException),  # something missing: a retry does not make it
        ("train", 4, AirflowFailException),  # a published version would be written over
        ("etl", 17, AirflowFailException),  # commits another metadata database made: adopt them first
        ("bless", 20, AirflowSkipException),  # the gate said no: deploy is skipped
        ("train", 10, None),  # anything else: retried with back-off
        ("deploy", 70, None),
    ],
)
def test_exit_codes_become_airflow_outcomes(stage: str, code: int, outcome: type | None) -> None:
    error = _outcome(
        stage, STAGES[stage], code, ["noise", "error: batch 2026-11-20 rejected, nothing published"]
    )
    assert str(error) == f"{stage} job exited {code}: batch 2026-11-20 rejected, nothing published"
    if outcome is None:
        assert type(error).__name__ == "AirflowException"
    else:
        assert isinstance(error, outcome)


def test_the_error_line_is_the_jobs_own() -> None:
    assert _error_line(["a", "internal error: KeyError: 'x' (--debug: traceback)", "b"]).startswith(
        "internal"
    )
    assert _error_line([]) == "no output"


def test_an_unreachable_airflow_is_one_clear_error() -> None:
    client = AirflowClient("http://127.0.0.1:9", "admin", "pw", timeout=2)
    with pytest.raises(AirflowError, match=r"Airflow at http://127\.0\.0\.1:9 is unreachable") as caught:
        client.unpause("fraud_training_pipeline")
    assert caught.value.exit_code == 14


def test_the_embedded_airflow_must_be_running_to_connect() -> None:
    with pytest.raises(AirflowError, match="the embedded Airflow is not running") as caught:
        AirflowClient.connect()
    assert "fjord up" in caught.value.one_line()


def test_a_task_is_complete_once_its_result_is_in_its_run_record(monkeypatch) -> None:
    """A job killed after its work but before it recorded its result is run again on retry (its work
    is idempotent under the run id); one that recorded it is not run again."""
    from airflow.sdk.exceptions import AirflowException

    from fjord.faults import CRASH_EXIT_CODE
    from fjord.lineage import get_run
    from fjord.projects import create_project

    create_project("fraud")
    hook = FjordJobHook()
    run_id = task_run_id("maintenance", "featurestore_maintenance", "manual__1", "compact")
    monkeypatch.setenv("FJORD_CRASH_AT", "job.returned")
    with pytest.raises(AirflowException, match=f"exited {CRASH_EXIT_CODE}"):
        hook.run("maintenance", {"project": "fraud"}, run_id=run_id, parent_run_id="dagrun-1")
    killed = get_run(run_id)
    assert killed.status == "succeeded" and killed.result is None  # its work done, not complete
    monkeypatch.delenv("FJORD_CRASH_AT")
    result = hook.run("maintenance", {"project": "fraud"}, run_id=run_id, parent_run_id="dagrun-1")
    completed = get_run(run_id)
    assert completed.result == result and result["summary"].startswith(f"maintenance run {run_id}")
    assert completed.started_at > killed.started_at  # the retry ran the job
    assert hook.run("maintenance", {"project": "fraud"}, run_id=run_id, parent_run_id="dagrun-1") == result
    assert get_run(run_id).started_at == completed.started_at  # the next one ran nothing

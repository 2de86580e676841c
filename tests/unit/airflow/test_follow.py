"""Following a DAG run fails fast on a hang, naming the task and its log (Airflow's answers faked at
the HTTP boundary: the error paths only; the e2e follows real runs)."""

from __future__ import annotations

import json

import httpx
import pytest

from fjord.airflow.client import AirflowClient, AirflowError, PipelineFailed

RUN = "manual__1"


def _airflow(task_state: str, patched: list[dict]) -> httpx.MockTransport:
    """An Airflow whose one run never ends: its task ``model.train`` stays in ``task_state``."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if path.endswith("/taskInstances"):
            ti = {"task_id": "model.train", "map_index": -1, "state": task_state, "try_number": 1}
            return httpx.Response(200, json={"task_instances": [ti]})
        if request.method == "PATCH":
            patched.append(json.loads(request.content))
            return httpx.Response(200, json={"state": "failed"})
        return httpx.Response(200, json={"state": "running"})

    return httpx.MockTransport(answer)


def test_a_stuck_task_fails_the_run_naming_the_task_and_its_log() -> None:
    patched: list[dict] = []
    client = AirflowClient("http://airflow", "admin", "pw", transport=_airflow("running", patched))
    with pytest.raises(PipelineFailed, match=r"task model\.train of dag is stuck: running for") as caught:
        client.follow("dag", RUN, poll_s=0.01, task_timeout_s=0.05)
    assert caught.value.hint == "its log: http://airflow/dags/dag/runs/manual__1/tasks/model.train"
    assert patched == [{"state": "failed"}]  # Airflow stops the run's tasks


def test_a_task_left_queued_names_the_misconfiguration() -> None:
    client = AirflowClient("http://airflow", "admin", "pw", transport=_airflow("queued", []))
    with pytest.raises(AirflowError, match=r"task model\.train of dag has been queued for 0 s"):
        client.follow("dag", RUN, poll_s=0.01, stuck_queued_s=0.05)


def test_a_run_past_its_timeout_names_what_still_runs() -> None:
    client = AirflowClient("http://airflow", "admin", "pw", transport=_airflow("running", []))
    with pytest.raises(AirflowError, match=r"did not finish in 0 s; running: model\.train") as caught:
        client.follow("dag", RUN, poll_s=0.01, timeout_s=0.05)
    assert "model.train's log: http://airflow/dags/dag/runs/manual__1/tasks/model.train" in str(
        caught.value.hint
    )


@pytest.mark.parametrize("failure", ["500", "reset", "500, then the kept-alive connection reset"])
def test_the_retraining_run_is_found_while_airflow_cannot_list_the_events(failure: str) -> None:
    """apache/airflow#71360 (Airflow 3.3.2): reading asset events fails while a run an event created
    is queued, with a 500 or a connection reset, and the API server then closes the kept-alive
    connection, so the next read on it is reset (seen twice in the e2e); `fjord run` finds that run
    among the DAG's asset-triggered runs instead, on a new connection."""
    resets = [failure.endswith("reset")]
    from datetime import UTC, datetime

    from fjord.cli.run_cmd import _created_run

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/auth/token":
            return httpx.Response(201, json={"access_token": "t"})
        if path == "/api/v2/assets":
            return httpx.Response(200, json={"assets": [{"uri": "fjord://drift/fraud/fraud", "id": 1}]})
        if path == "/api/v2/assets/events":
            if failure == "reset":
                raise httpx.ReadError("[Errno 104] Connection reset by peer")
            return httpx.Response(500, json={"detail": "Internal Server Error"})
        if resets[0]:  # the first read after the 500 meets the connection the server closed
            resets[0] = False
            raise httpx.ReadError("[Errno 104] Connection reset by peer")
        runs = [
            {"dag_run_id": "asset_triggered__new", "run_type": "asset_triggered",
             "queued_at": "2026-12-04T10:00:05Z"},
            {"dag_run_id": "scheduled__weekly", "run_type": "scheduled", "queued_at": "2026-12-04T10:00:06Z"},
            {"dag_run_id": "asset_triggered__old", "run_type": "asset_triggered",
             "queued_at": "2026-12-01T10:00:00Z"},
        ]  # fmt: skip
        return httpx.Response(200, json={"dag_runs": runs})

    client = AirflowClient("http://airflow", "admin", "pw", transport=httpx.MockTransport(answer))
    alert = {"alert_id": "a1", "posted_at": datetime(2026, 12, 4, 10, 0, 4, tzinfo=UTC)}
    assert _created_run(client, "fjord://drift/fraud/fraud", alert) == "asset_triggered__new"

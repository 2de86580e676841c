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

"""`fjord up | down | status | logs` on a stack that is not running: honest states, one-line errors,
usage errors exit 2. (The e2e test starts and stops the real stack.)"""

from __future__ import annotations

import json

import pytest

from fjord.cli.main import main


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_status_of_a_stopped_stack_lists_every_component(capsys) -> None:
    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0
    components = {c["name"]: c for c in json.loads(out)}
    assert {"kafka", "mlflow", "airflow", "postgres"} <= set(components)
    assert not any(c["running"] for c in components.values())
    code, out, _ = cli(capsys, "status")
    assert code == 0 and "airflow" in out and "stopped" in out


def test_down_with_nothing_running_says_so(capsys) -> None:
    code, out, _ = cli(capsys, "down")
    assert code == 0 and "airflow" in out and "not running" in out and "stopped" not in out.replace("not", "")


def test_logs_of_an_unknown_component_is_one_line(capsys) -> None:
    code, _, err = cli(capsys, "logs", "nope")
    assert code == 3 and err.count("\n") == 1
    assert "no component 'nope'" in err and "airflow" in err and "Traceback" not in err
    code, out, _ = cli(capsys, "logs", "airflow")
    assert code == 0 and "no logs yet" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["logs"], "Missing argument 'name'"),
        (["logs", "airflow", "-n", "0"], "Invalid value for '--lines'"),
        (["up", "--nope"], "No such option: --nope"),
        (["run", "--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_exit_2(capsys, args, message) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_configured_airflow_without_a_password_is_refused(capsys, monkeypatch) -> None:
    from fjord.airflow.client import AirflowClient, AirflowError
    from fjord.config import reset_settings

    monkeypatch.setenv("FJORD_AIRFLOW__API_URL", "http://127.0.0.1:9")
    reset_settings()
    with pytest.raises(AirflowError, match=r"airflow\.password is not"):
        AirflowClient.connect()


def test_down_stops_what_this_home_started_whatever_storage_root_is_in_force(capsys, fjord_home) -> None:
    """A model server and a monitor started while the root was hdfs://... are found by their state files
    in FJORD_HOME, not through the current root's servings (which know nothing of them)."""
    import subprocess

    processes = {}  # project fraud is not even known under the root in force
    for name, state in (("server", fjord_home / "serving" / "fraud" / "state.json"),
                        ("monitor", fjord_home / "monitor" / "fraud" / "fraud" / "state.json")):  # fmt: skip
        processes[name] = subprocess.Popen(["sleep", "300"], start_new_session=True)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"pid": processes[name].pid, "project": "fraud", "model": "fraud",
                                     "url": "http://127.0.0.1:1", "log": "x"}))  # fmt: skip
    code, out, _ = cli(capsys, "down")
    assert code == 0
    assert "model-server/fraud   stopped" in out and "monitor/fraud/fraud  stopped" in out
    for process in processes.values():
        assert process.wait(timeout=60) is not None  # stopped, and reaped here


def test_a_partly_running_airflow_is_named_with_what_is_down(capsys, fjord_home) -> None:
    """One of the stack's processes died (a Celery worker, the scheduler): `fjord status` and the
    commands that need Airflow say which, not that Airflow is not running."""
    import subprocess
    import sys

    from fjord.airflow.client import AirflowClient, AirflowError
    from fjord.airflow.stack import airflow_service
    from fjord.services.process import write_state

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    service = airflow_service()
    service.dir.mkdir(parents=True, exist_ok=True)
    state = service.dir / "state.json"
    write_state(state, {"ports": {"api": 1}, "pids": {"api-server": alive.pid, "scheduler": gone.pid}})
    try:
        with pytest.raises(AirflowError) as refused:
            AirflowClient.connect()
        assert str(refused.value) == "the embedded Airflow is partly running (scheduler is down)"
        code, out, _ = cli(capsys, "status")
        assert code == 0 and "partly running (scheduler is down)" in out
    finally:
        state.unlink()
        alive.communicate(b"")

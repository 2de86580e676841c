"""`make run`'s job, run as a user runs it: the `fjord run` console script on the embedded defaults,
with the shared filesystem on the embedded HDFS (the mission's coordination layer: every stage, the
model server, the monitor and the maintenance DAG read and write ``hdfs://``)."""

import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import run_fjord
from tests.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(fjord_home, monkeypatch):
    """The job leaves the whole stack up (Airflow, MLflow, Kafka, the model server): `fjord down` must
    stop every process of it, children included. The storage root is this home's HDFS."""
    from fjord.config import reset_settings
    from fjord.services import service

    started = run_fjord("services", "start", "hdfs")
    assert started.returncode == 0, started.stderr[-2000:]
    monkeypatch.setenv("FJORD_STORAGE__ROOT", f"{service('hdfs').address()}/fjord")
    reset_settings()
    yield
    before = _stack_processes()
    down = run_fjord("down")
    assert down.returncode == 0, down.stderr[-2000:]
    _assert_gone(before)


def _stack_processes() -> set[int]:
    """Every live process of the stack: the recorded pids and all their descendants."""
    import psutil

    status = json.loads(run_fjord("status", "--json").stdout)
    pids: set[int] = set()
    for component in status:
        for pid in component["pids"].values():
            try:
                root = psutil.Process(pid)
                pids |= {root.pid, *(child.pid for child in root.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass
    return pids


def _assert_gone(pids: set[int]) -> None:
    import psutil

    left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, [psutil.Process(p).cmdline()[:3] for p in left]


@pytest.mark.timeout(3000)  # about 20 minutes on 2 cores: six DAG runs, one of them the whole pipeline
def test_main_job_runs_the_pipeline_through_airflow(fjord_home, stack) -> None:
    first = run_fjord("run", timeout=2400)  # about 10 minutes on 2 cores
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    for text in (
        "airflow       http://127.0.0.1:",
        "2 batches, 20,000 transactions",
        "run manual__",
        "success ingest.wait_for_batch[0]",
        "success ingest.etl[1]",
        "0 quarantined",
        # commit 0 unless the daily run that unpausing starts published the latest batch first
        "published transactions_features commit ",
        "training dataset v1",
        "model fraud v1 (candidate) from training dataset v1",
        "blessed for serving fraud (no champion yet",
        "deployed fraud v1 as stable of serving fraud (blessed: no champion yet",
        "fraud_training_pipeline success",
        "model fraud v1 <- train run train-af-",
        "-> fraud probability 0.",
        "fraud_inference_log request",
        "fraud_inference_log response",
        "2 records of inference",
        "<- served fraud v1 <- deploy run deploy-af-",
        "<- model fraud v1 <- train run train-af-",
        "<- training dataset fraud_demo_1 v1",
        "card_features_1 commit",
        "monitor/fraud/fraud  running",
        "the monitor archived them",
        "success train_wanted",  # the day's ingest-only run stops before the training data
        "skipped training_dataset",
        "success performance",
        "success skew",
        "alert drift in window",
        "-> Airflow asset event",
        "-> fraud_retrain run asset_triggered__",
        "The retraining's candidate, judged on the traffic it would have served",
        "candidate fraud v2: held-out ROC AUC",
        "Airflow UI",
        "Monitoring  http://127.0.0.1:",
        "MLflow UI",
        "fjord down",
    ):
        assert text in out, text
    assert re.search(r"label rate \d\.\d+%", out)
    # the retraining's gate: held-out split, then (if that passed) the last 24 h of served traffic
    decided = re.search(r"   -> (blessed|rejected)[^\n]*(the deployment goes on|nothing deployed)", out)
    assert decided, out[-3000:]
    if "held-out ROC AUC" in out and decided.group(1) == "blessed":
        assert re.search(r"replayed on [\d,]+ served rows of the last 24 h: \d+\.\d% of decisions agree", out)
    # the demo's batches end yesterday: a daily schedule and every Trigger button's default window find them
    landed = re.search(r"2 batches, 20,000 transactions: (\S+) \.\. (\S+)", out).groups()
    first_day = date.fromisoformat(landed[0])
    assert date.fromisoformat(landed[1]) == first_day + timedelta(days=1)
    assert first_day >= date.today() - timedelta(days=3)  # yesterday's, unless the run crossed midnight
    assert f"batch {landed[0]}:" in out and f"<- raw landing batches: {landed[0]}, {landed[1]}" in out
    # library noise (log4j, absl, GX) goes to the run's log file or the task logs, not the terminal
    assert first.stderr == "", first.stderr[-2000:]
    auc = float(re.search(r"test ROC AUC (\d\.\d+)", out).group(1))
    assert auc > 0.75  # engineered features make fraud learnable (raw amount alone: about 0.69)
    timings = json.loads(Path(re.search(r"task durations in (\S+)", out).group(1)).read_text())
    assert timings["state"] == "success" and timings["tasks"]["model.train"] > 0
    _the_days_traffic_was_judged_by_its_labels_and_its_features(out, landed, timings)

    _the_airflow_login_is_on_the_terminal_and_in_no_file(fjord_home, out)
    _every_listening_port_of_the_stack_is_on_loopback()

    again = run_fjord("up")  # harmless: everything is found running
    assert again.returncode == 0 and "airflow" in again.stdout, again.stderr[-2000:]

    _the_drift_alert_started_a_retraining_run(out)
    run_id = re.search(r"run (manual__\S+):", out).group(1)
    published = _published_state()
    _a_cleared_run_survives_a_scheduler_crash_and_changes_nothing(run_id, published)
    _a_bad_batch_stops_at_validation_and_nothing_changes(published, landed[1])
    _batch_inference_scores_a_day_once(landed[1])
    _maintenance_compacts_and_keeps_the_training_data_rebuildable()
    _after_a_cleared_retraining_run_the_next_drift_alert_retrains(out)

    served = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    # v2 and v3: the two retrainings' candidates, each deployed if its gate (held-out, replay) passed
    assert served["state"] == "Running" and served["labels"]["stable"] in (1, 2, 3)
    _a_worse_model_is_refused_and_nothing_changes(served)
    _mlflow_loads_the_champion()
    _rollback_returns_to_the_version_before(served)


PIPELINE = "fraud_training_pipeline"


def _the_days_traffic_was_judged_by_its_labels_and_its_features(
    out: str, landed: tuple, timings: dict
) -> None:
    """Step 10: the next day's transactions went over REST with their tids; once its batch went
    through the ETL, every served row met its label (realized beside estimated) and its offline
    features (the skew report: the served inputs are the ETL's, but for the rare transactions of one
    card within one second)."""
    day = re.search(r"(\S+): (\d+),(\d{3}) transactions in (\d+) REST calls", out)
    assert day and date.fromisoformat(day.group(1)) == date.fromisoformat(landed[1]) + timedelta(days=1)
    sent = int(day.group(2) + day.group(3))
    assert timings["day"]["state"] == "success" and timings["day"]["tasks"]["skew"] > 0
    window = re.search(
        r"v1 \S+ 00:00: ([\d,]+)/([\d,]+) labelled; ROC AUC realized (0\.\d+) estimated (0\.\d+)", out
    )
    assert window, out[-4000:]
    labelled = int(window.group(1).replace(",", ""))
    assert labelled >= sent  # the day's rows, and the samples of step 7
    assert float(window.group(3)) > 0.75 and abs(float(window.group(3)) - float(window.group(4))) < 0.15
    skew = dict(re.findall(r"^\s+(\w+)\s+([\d.]+)% beyond tolerance", out, flags=re.M))
    assert len(skew) == 13 and max(float(s) for s in skew.values()) < 1.0, skew
    from fjord.airflow.client import AirflowClient, skew_asset

    assert AirflowClient.connect().asset_id(skew_asset("fraud", "fraud")) > 0  # a skew alert can be posted


def _the_airflow_login_is_on_the_terminal_and_in_no_file(home: Path, out: str) -> None:
    """As Airflow's standalone mode does, `fjord run` prints the Airflow and MLflow logins; no log or
    other file of the home holds them, or the broker's generated Kafka password, but their own
    mode-600 files (docs/security.md)."""
    import stat

    airflow = home / "services" / "airflow" / "simple_auth_manager_passwords.json"
    mlflow = home / "mlflow" / "credentials.json"
    kafka = home / "services" / "kafka" / "credentials.json"
    dashboard = home / "monitor" / "dashboard_token"
    kept = {  # each password, and the only files that may hold it
        next(iter(json.loads(airflow.read_text()).values())).encode(): {airflow},
        json.loads(mlflow.read_text())["password"].encode(): {mlflow},
        json.loads(kafka.read_text())["password"].encode(): {kafka, kafka.parent / "server.properties"},
        dashboard.read_text().strip().encode(): {dashboard},
    }
    for files in kept.values():
        assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files), files
    airflow_login, mlflow_login, _, dashboard_token = (password.decode() for password in kept)
    assert airflow_login in out and mlflow_login in out and f"token={dashboard_token}" in out

    def holds(path: Path) -> bool:
        try:  # the running stack writes, rotates and removes files meanwhile
            if not path.is_file() or path.stat().st_size >= 200_000_000:
                return False
            data = path.read_bytes()
        except OSError:
            return False
        return any(password in data for password, files in kept.items() if path not in files)

    assert [path for path in home.rglob("*") if holds(path)] == []


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}  # a JVM's IPv6 socket bound to 127.0.0.1 shows mapped


def _every_listening_port_of_the_stack_is_on_loopback() -> None:
    """docs/security.md's port table, made true: every socket any process of the running stack
    listens on (Airflow, MLflow, Kafka, HDFS, the model server, the monitor and its Spark driver, the
    dashboard) is bound to loopback, none to every interface."""
    import psutil

    listening = {}
    for pid in _stack_processes():
        try:
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening[(conn.laddr.ip, conn.laddr.port)] = " ".join(psutil.Process(pid).cmdline()[:3])
        except psutil.Error:  # a task process that ended meanwhile
            pass
    assert len(listening) >= 8, listening  # the stack's servers were found
    assert {ip for ip, _ in listening} <= LOOPBACK, {
        k: v for k, v in listening.items() if k[0] not in LOOPBACK
    }


def _published_state() -> dict:
    """What a rerun must leave as it is: commits, training datasets, model versions, served labels."""
    import featurestore
    from fjord.experiment.tracking import client, tracking_uri

    fs = featurestore.connect("fraud")
    groups = ("transactions_features", "fraud_labels", "profile_features", "card_features")
    commits = {g: sorted(fs.get_feature_group(g, 1).commit_details()) for g in groups}
    view = fs.get_feature_view("fraud_demo", 1)
    versions = sorted(int(v.version) for v in client(tracking_uri()).search_model_versions("name='fraud'"))
    status = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    return {
        "commits": commits,
        "datasets": sorted(view.get_training_dataset_versions()),
        "model_versions": versions,
        "labels": status["labels"],
    }


def _a_cleared_run_survives_a_scheduler_crash_and_changes_nothing(run_id: str, published: dict) -> None:
    """Clear the whole DAG run and kill the scheduler (its workers and tasks with it) while the rerun
    runs; `fjord up` starts it again, the run resumes and ends, and every task reuses its recorded
    result: no commit, training dataset, model version or deployment is added."""
    from fjord.airflow.client import AirflowClient
    from fjord.airflow.stack import airflow_service
    from fjord.services.process import kill_group

    client = AirflowClient.connect()
    client.request("POST", f"/dags/{PIPELINE}/dagRuns/{run_id}/clear", json={"dry_run": False})
    wait_for(
        lambda: any(t.state == "running" for t in client.task_states(PIPELINE, run_id)), 120, "the rerun"
    )
    scheduler = airflow_service().pids()["scheduler"]
    kill_group(scheduler)
    restarted = run_fjord("up")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert airflow_service().pids()["scheduler"] != scheduler
    client = AirflowClient.connect()
    assert client.follow(PIPELINE, run_id, timeout_s=900) == "success"
    assert _published_state() == published


def _a_bad_batch_stops_at_validation_and_nothing_changes(published: dict, latest: str) -> None:
    """A batch whose rows are from another day fails its freshness expectations: the ETL task fails
    at once (no retry helps), with the report's path; nothing downstream runs or changes."""
    from fjord.airflow.client import AirflowClient
    from fjord.projects import get_project

    bad = (date.fromisoformat(latest) + timedelta(days=18)).isoformat()
    fs = get_project("fraud").fs
    for name in ("transactions.parquet", "labels.parquet", "profiles.parquet"):
        fs.write_bytes(f"Resources/landing/{bad}/{name}", fs.read_bytes(f"Resources/landing/{latest}/{name}"))
    fs.write_text(f"Resources/landing/{bad}/_SUCCESS", "{}")
    client = AirflowClient.connect()
    run = client.trigger(PIPELINE, conf={"project": "fraud", "batches": [bad]})
    assert client.follow(PIPELINE, run["dag_run_id"], timeout_s=900) == "failed"
    tasks = {t.name: t for t in client.task_states(PIPELINE, run["dag_run_id"])}
    assert tasks["ingest.etl[0]"].state == "failed" and tasks["ingest.etl[0]"].try_number == 1
    assert tasks["training_dataset"].state == "upstream_failed"
    log = client.task_log(PIPELINE, run["dag_run_id"], tasks["ingest.etl[0]"])
    assert f"batch {bad} rejected, nothing published" in log and "Logs/validation/" in log
    assert _published_state() == published


def _the_drift_alert_started_a_retraining_run(out: str) -> None:
    """`fjord run`'s drifted traffic made the monitor post an alert on the drift asset; the
    fraud_retrain run it started records the alert as its cause, and the alert records the run."""
    from fjord.airflow.client import AirflowClient, dag_run_record_id
    from fjord.lineage import get_run
    from fjord.projects import get_project
    from jobs.monitor.store import MonitorStore

    run_id = re.search(r"-> fraud_retrain run (\S+):", out).group(1)
    client = AirflowClient.connect()
    # `fjord run` followed it through its gate; the deployment (if blessed) ends on its own
    assert client.follow("fraud_retrain", run_id, timeout_s=900) == "success"
    cause = get_run(dag_run_record_id("fraud_retrain", run_id)).params["cause"]
    extra = cause["events"][0]["extra"]
    assert cause["trigger"] == "asset event" and extra["kind"] == "drift" and extra["model"] == "fraud"
    # the retraining window ends where the drifted window ends
    assert extra["window_end"][:10] == cause["end_time"][:10]
    _quiet_retraining(client)

    alerts = MonitorStore(get_project("fraud").fs, "fraud").alerts()
    posted = [a for a in alerts if a["state"] == "posted"]
    assert len(posted) == 1 and posted[0]["alert_id"] == extra["alert_id"]  # the cool-down holds the rest
    store = MonitorStore(get_project("fraud").fs, "fraud")
    wait_for(
        lambda: [a["dag_run_id"] for a in store.alerts() if a["state"] == "posted"] == [run_id],
        60,
        "the alert's run",
    )
    status = run_fjord("monitor", "status", "--project", "fraud")
    assert status.returncode == 0 and "running (pid" in status.stdout, status.stderr
    shown = json.loads(run_fjord("monitor", "alerts", "--project", "fraud", "--json").stdout)
    assert [a["dag_run_id"] for a in shown if a["state"] == "posted"] == [run_id]


def _after_a_cleared_retraining_run_the_next_drift_alert_retrains(out: str) -> None:
    """apache/airflow#71360 (Airflow 3.3.2): while a run that an asset event created waits in the
    queue with no start date (a cleared run does, and so does any run queued behind another), every
    read of the asset's events fails with a 500. Clear the first retraining run (its cause task), and
    have the monitor's notifier post another drift alert at once: the run it starts queues behind the
    cleared one. The notifier still resolves the alert's run, and that run reads its triggering event,
    retrains, blesses and deploys: it succeeds."""
    from datetime import UTC, datetime, timedelta

    from fjord.airflow.client import AirflowClient, dag_run_record_id, drift_asset
    from fjord.lineage import get_run
    from jobs.monitor.alerts import AirflowNotifier

    first = re.search(r"-> fraud_retrain run (\S+):", out).group(1)
    client = AirflowClient.connect()
    client.unpause("fraud_retrain")
    client.request(
        "POST", "/dags/fraud_retrain/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": first, "task_ids": ["cause"], "reset_dag_runs": True,
              "only_failed": False},
    )  # fmt: skip
    now = datetime.now(UTC)
    alert = {
        "alert_id": f"fraud/1/{int(now.timestamp() * 1000)}/drift", "model": "fraud", "version": 1,
        "window_start": now - timedelta(minutes=1), "kind": "drift", "message": "e2e: drift again",
        "detail": json.dumps({"window_end": now.isoformat()}), "state": "pending", "event_id": None,
        "dag_run_id": None, "created_at": now, "posted_at": None,
    }  # fmt: skip
    notifier = AirflowNotifier(drift_asset("fraud", "fraud"))

    def delivered() -> bool:
        for update in notifier.deliver([alert]):
            alert.update(update)
        return bool(alert["dag_run_id"])

    wait_for(delivered, 300, "the second alert's retraining run")
    second = alert["dag_run_id"]
    assert second != first
    assert client.follow("fraud_retrain", second, timeout_s=900) == "success"
    cause = get_run(dag_run_record_id("fraud_retrain", second)).params["cause"]
    assert [e["extra"]["alert_id"] for e in cause["events"]] == [alert["alert_id"]]
    assert _task_state(client, "fraud_retrain", first, "cause") == "success"


def _quiet_retraining(client) -> None:
    """Pause fraud_retrain, fail its every queued or running run (the alert's, and any other an
    asset event started), and wait until their tasks' processes are gone: a task marked failed is
    killed at its next heartbeat, and one about to publish may still publish first. Until step
    "the next drift alert retrains" unpauses it, only the runs a step starts publish anything."""
    import os

    client.request("PATCH", "/dags/fraud_retrain", json={"is_paused": True})
    runs = client.dag_runs("fraud_retrain")
    active = [r["dag_run_id"] for r in runs if r["state"] in ("queued", "running")]
    for run_id in active:
        client.request("PATCH", f"/dags/fraud_retrain/dagRuns/{run_id}", json={"state": "failed"})

    def alive(pid: int | None) -> bool:
        try:
            os.killpg(pid, 0)  # a task runner leads its own process group: its jobs are in it
        except (ProcessLookupError, TypeError):
            return False
        return True

    def ended() -> bool:
        return not any(
            alive(ti.get("pid"))
            for run_id in active
            for ti in client.request("GET", f"/dags/fraud_retrain/dagRuns/{run_id}/taskInstances")[
                "task_instances"
            ]
        )

    wait_for(ended, 120, "the stopped retraining runs' tasks to exit")


def _task_state(client, dag_id: str, run_id: str, task_id: str) -> str | None:
    return {t.task_id: t.state for t in client.task_states(dag_id, run_id)}.get(task_id)


def _run_dag(dag_id: str, conf: dict) -> dict:
    """Trigger ``dag_id`` with ``conf`` over REST, follow it to success; its last task's result."""
    from fjord.airflow.client import AirflowClient

    client = AirflowClient.connect()
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run = client.trigger(dag_id, conf=conf)
    assert client.follow(dag_id, run["dag_run_id"], timeout_s=600) == "success"
    (task,) = client.task_states(dag_id, run["dag_run_id"])
    return client.xcom(dag_id, run["dag_run_id"], task)


def _batch_inference_scores_a_day_once(latest: str) -> None:
    """fraud_batch_inference, triggered with its defaults (the Trigger button), scores yesterday, the
    demo's latest day, with the champion as a versioned dataset with lineage; the same day again
    publishes nothing new."""
    from fjord.lineage import lineage_graph

    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    # the defaults, unless the clock passed midnight since the demo landed its batches
    conf = {} if latest == yesterday else {"start_time": latest, "end_time": yesterday}
    first = _run_dag("fraud_batch_inference", conf)
    # the champion: v1, or v2 if the drift alert's retraining deployed its candidate
    assert first["dataset_version"] == 1 and first["model_version"] in (1, 2) and first["rows"] > 9000
    assert not first["reused"] and 0 < first["mean_score"] < 0.5
    tree = lineage_graph(first["uri"], "1")
    assert {n.artifact.kind for n in tree.inputs} == {"model", "feature_group"}
    (model,) = [n.artifact for n in tree.inputs if n.artifact.kind == "model"]
    assert model.version == str(first["model_version"])  # the lineage names the version that scored
    again = _run_dag("fraud_batch_inference", conf)
    assert again["dataset_version"] == 1 and again["reused"]


def _maintenance_compacts_and_keeps_the_training_data_rebuildable() -> None:
    """featurestore_maintenance compacts every group and vacuums with no retention; training dataset
    v1 still rebuilds bit for bit from the commits it names.

    Unpausing the DAG also starts its latest scheduled run (weekly, no catch-up), beside the one
    triggered here: either may be the one that compacts, so the groups' commits are checked, not
    which run's result says so."""
    import featurestore

    _run_dag("featurestore_maintenance", {"project": "fraud", "retention_hours": 0})
    store = featurestore.connect("fraud")
    for name in ("transactions_features", "card_features"):
        (latest,) = store.get_feature_group(name, 1).commit_details(limit=1).values()
        assert latest["run_id"].startswith("maintenance-af-"), (name, latest)
    view = store.get_feature_view("fraud_demo", 1)
    rebuilt, _ = view.recreate_training_data(1)
    assert view.read_training_dataset(rebuilt).equals(view.read_training_dataset(1))


def _rollback_returns_to_the_version_before(served: dict) -> None:
    from jobs.serve import serving

    if served["labels"]["stable"] == 1:  # both retrainings' candidates were refused: deploy v2 anyway
        forced = run_fjord("model", "deploy", "fraud", "--project", "fraud", "--version", "2", "--force")
        assert forced.returncode == 0 and "deployed fraud v2 as stable" in forced.stdout, forced.stderr[
            -2000:
        ]
    history = serving.get_serving("fraud", project="fraud").history  # stable versions, oldest first
    current, before = history[-1], history[-2]
    rolled = run_fjord("model", "rollback", "fraud", "--project", "fraud")
    assert rolled.returncode == 0 and f"stable rolled back from v{current} to v{before}" in rolled.stdout, (
        rolled.stderr[-2000:]
    )
    status = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    assert status["labels"] == {"stable": before} and status["versions"].get(str(before)) == "AVAILABLE"


def _a_worse_model_is_refused_and_nothing_changes(served: dict) -> None:
    """A registered version that scores every transaction the same (ROC AUC 0.5) never replaces the
    champion: the deployment job exits 20 with both figures, and the served versions stay."""
    import os
    import subprocess
    import sys

    from fjord.experiment.tracking import client, tracking_uri
    from fjord.projects import get_project

    mlflow = client(tracking_uri())
    champion = mlflow.get_model_version_by_alias("fraud", "champion")
    logged = champion.source.rsplit("/", 1)[-1]  # models:/m-<id>: the logged model the version points at
    worse = mlflow.create_model_version(
        "fraud", champion.source, run_id=champion.run_id, tags=champion.tags, model_id=logged
    )
    project = get_project("fraud")
    _constant_model(_feature_names(project, champion.version), project, f"Models/fraud/{worse.version}")
    deploy = subprocess.run(
        [sys.executable, "-m", "jobs.serve.main", "--project", "fraud", "--version", str(worse.version)],
        capture_output=True, text=True, env=dict(os.environ), timeout=600,
    )  # fmt: skip
    assert deploy.returncode == 20, deploy.stderr[-2000:]
    last = deploy.stderr.strip().splitlines()[-1]  # above it, TensorFlow's C++ start-up lines
    assert last.startswith("error: ") and f"fraud v{worse.version} not deployed: ROC AUC 0.5000" in last
    assert "Traceback" not in deploy.stderr
    after = json.loads(run_fjord("model", "status", "fraud", "--project", "fraud", "--json").stdout)
    assert after["labels"] == served["labels"] and after["versions"] == served["versions"]
    assert mlflow.get_model_version_by_alias("fraud", "champion").version == champion.version
    assert mlflow.get_model_version("fraud", worse.version).tags["fjord.blessing.decision"] == "rejected"


def _feature_names(project, version: str) -> list[str]:
    from jobs.serve.backends import read_signature_defs, signatures_of

    with project.fs.local_copy(f"Models/fraud/{version}") as local:
        return sorted(signatures_of(read_signature_defs(Path(local)))["serving_default"].inputs)


def _constant_model(features: list[str], project, rel: str) -> None:
    """A model scoring everything 0.5, published at ``rel`` (where MLflow numbered a version)."""
    import tempfile

    import tensorflow as tf

    class Constant(tf.Module):
        @tf.function(input_signature=[{name: tf.TensorSpec([None], tf.float32, name) for name in features}])
        def serve(self, inputs):
            first = inputs[features[0]]
            return {"fraud_probability": tf.zeros_like(first) + 0.5}

    model = Constant()
    with tempfile.TemporaryDirectory() as tmp, project.fs.publish(rel) as out:
        tf.saved_model.save(model, tmp, signatures={"serving_default": model.serve})
        for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
            out.upload(str(path), path.relative_to(tmp).as_posix())


def _mlflow_loads_the_champion() -> None:
    """Every registered version is a real MLflow model: MLflow's own loader scores with it."""
    import mlflow
    import pandas as pd

    from fjord.experiment.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    model = mlflow.pyfunc.load_model("models:/fraud@champion")
    columns = [c.name for c in model.metadata.get_input_schema().inputs]
    scores = model.predict(pd.DataFrame({c: [1.0, 2.0] for c in columns}))
    assert list(scores.columns) == ["fraud_probability"] and len(scores) == 2

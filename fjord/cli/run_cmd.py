"""``fjord run``: the platform's main job on the configured stack (``make run``), through Airflow.

1. the local stack (``fjord up``): Kafka, the MLflow tracking server, Airflow (4 processes, job worker),
2. the demo project, 3. its Python environment,
4. demo data: daily batches of card transactions landing in ``Resources/landing/``,
5. ``fraud_training_pipeline`` unpaused and triggered through Airflow's REST API, then followed in
   the terminal, a line per task with its duration and result: wait for the batches -> Spark ETL +
   Great Expectations validation (one task per batch) -> training dataset -> search + train +
   evaluate + optimize + register -> the blessing gate -> deployment,
6. the model's provenance: model version -> training run -> training data -> raw batches,
7. predictions over REST for sample transactions (card, amount, time, place),
8. their inference log records, read back from Kafka,
9. the lineage of one prediction: served version -> model run -> training data -> raw batches,
10. the model's streaming monitor: drifted traffic over REST raises a drift alert, whose Airflow
    asset event starts ``fraud_retrain``,
and the URLs of the Airflow UI, the monitoring dashboard, the MLflow UI and the validation reports.
The stack stays up.

``fjord run --local`` runs the same pipeline in this process instead (as TFX's LocalDagRunner
does), for debugging: no Airflow; the same steps, order and arguments (one definition,
fjord/pipeline.py, with the demo's settings from demo/fraud/pipeline.yaml) and the same stage jobs.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.text import Text

from fjord import stepcache
from fjord.cli.output import console, library_output_to
from fjord.config import get_settings
from fjord.envs import build_environment
from fjord.errors import FjordError
from fjord.experiment.tracking import tracking_uri
from fjord.jobmain import result_document
from fjord.lineage import lineage_graph, new_run_id, raw_sources, walk
from fjord.metadata import masked
from fjord.pipeline import STAGES, load_pipeline_config, training_pipeline
from fjord.projects import ensure_project

DEMO_ROWS = 20_000
DEMO_DAYS = 2


def _step(number: int, text: str) -> float:
    console.print(Text.assemble("\n", (f"{number}.", "bold cyan"), f" {text}"))
    return time.perf_counter()


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers as a person reads them (3 significant digits)."""
    return {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in values.items()}


def _done(started: float, text: str = "") -> None:
    console.print(f"   ok {text} ({time.perf_counter() - started:.1f} s)")


PIPELINE = "fraud_training_pipeline"


def run(
    project: str = typer.Option("fraud", help="Project to run the pipeline in (created if missing)."),
    local: bool = typer.Option(
        False, "--local", help="Run the stage jobs in this process instead of through Airflow (debugging)."
    ),
    cache: bool = typer.Option(
        True,
        "--cache/--no-cache",
        help="Reuse a step's earlier result when its inputs, code, environment and arguments are unchanged.",
    ),
) -> None:
    """Run the platform's main job: the stack, demo data, and the training pipeline through Airflow."""
    settings = get_settings()
    log = settings.home / "logs" / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    console.print(f"Fjord main job{' (--local: in this process)' if local else ''}")
    console.print(f"   library output     {log} (--debug shows it here)")
    master = settings.spark.master
    if settings.services.profile == "cluster":  # its root, database and master: its services' addresses
        from fjord.cluster import resolve, spark_master

        settings = resolve(settings)
        master = spark_master(settings)
    console.print(f"   shared filesystem  {settings.storage.root}")
    console.print(f"   spark master       {master}")
    url = settings.metadata.url
    console.print(f"   metadata           {masked(url) if url else '(not set)'}")
    console.print(
        f"   feature store      join engine {settings.featurestore.join_engine.type}, "
        f"online store {settings.featurestore.online_store.type}"
    )
    with library_output_to(log):
        if local:
            _run_local(project, cache)
        else:
            _run_airflow(project, settings, log, cache)


def _prepare(project: str, first_step: int) -> tuple[Any, list[str]]:
    """The project, its environment and the landed demo batches (the steps both paths share)."""
    from jobs.etl.demo_data import DemoSpec, generate, recent_start

    t = _step(first_step, f"Project '{project}'")
    proj = ensure_project(project, description="Card fraud detection (the flagship demo)")
    _done(t, proj.root_uri)

    t = _step(first_step + 1, "Project Python environment (platform packages + the project's spec)")
    env = build_environment(proj)
    _done(t, f"{env.key}, lock {env.lock_hash}, additions: {', '.join(env.additions) or 'none'}")

    t = _step(first_step + 2, "Demo data: daily batches of card transactions land in Resources/landing/")
    # Dated up to yesterday: every DAG's Trigger button, with its default window, finds them.
    demo = DemoSpec(rows=DEMO_ROWS, days=DEMO_DAYS, seed=42, start=recent_start(DEMO_DAYS))
    batches = generate(proj.fs, demo)
    _done(t, f"{len(batches)} batches, {DEMO_ROWS:,} transactions: {batches[0]} .. {batches[-1]}")
    return proj, batches


def _run_airflow(project: str, settings: Any, log: Any, cache: bool = True) -> None:
    from fjord.airflow.client import AirflowClient, PipelineFailed
    from fjord.cli.stack_cmd import airflow_login, mlflow_login, start_stack

    t = _step(1, "The local stack: Kafka, MLflow, Airflow (api-server, scheduler, dag-processor, triggerer)")
    urls = start_stack(settings, lambda line: console.print(f"   {line}"))
    _done(t)
    proj, batches = _prepare(project, 2)

    t = _step(5, f"Airflow: unpause and trigger {PIPELINE} (REST API), then follow it")
    client = AirflowClient.connect(settings)
    client.wait_for_dag(PIPELINE)
    client.unpause(PIPELINE)
    results, run_id, state = _follow(client, {"project": project, "batches": batches, "cache": cache}, log)
    if state != "success":
        raise PipelineFailed(
            f"{PIPELINE} run {run_id} failed",
            hint=f"the failed task's log: {client.url}/dags/{PIPELINE}/runs/{run_id}; "
            f"validation reports: {proj.fs.uri('Logs/validation')}",
        )
    _done(t, f"{PIPELINE} {state}; task durations in {log.with_suffix('.tasks.json')}")

    trained = results["model.train"]
    _model_provenance(6, trained["model_name"], trained["model_version"], trained["model_uri"],
                      trained["training_dataset_version"])  # fmt: skip
    if "model.deploy" not in results:
        console.print("   the gate kept the champion: the candidate was not deployed")
    from jobs.serve import serving

    url = serving.url(project=project)
    _predict_and_trace(7, project, trained["model_name"], trained["model_version"], proj, batches[-1], url)
    _days_traffic(10, project, trained["model_name"], proj, url, client, log)
    dashboard, retraining = _monitor_drift(
        11, project, trained["model_name"], proj, batches[-1], url, client, log
    )
    _retraining_judged(12, retraining, client)
    console.print(f"\nAirflow UI  {urls.get('airflow', client.url)}  (login: {airflow_login(settings)})")
    from jobs.monitor.service import dashboard_login

    query = f"project={project}&model={trained['model_name']}"
    console.print(f"Monitoring  {dashboard_login(dashboard, query)}")
    console.print(f"MLflow UI   {tracking_uri()}  ({mlflow_login(settings)})")
    console.print(f"validation reports: {proj.fs.uri('Logs/validation')}/<run id>/index.html")
    console.print(
        f"serving: curl -s {url}/v1/models/{trained['model_name']}:predict -d @request.json · "
        f"fjord kafka tail {trained['model_name']}_inference_log · "
        f"metrics {url}/monitoring/prometheus/metrics"
    )
    console.print("The stack stays up for its UIs and clients: `fjord status`; stop it with `fjord down`.")


def _follow(
    client: Any, conf: dict[str, Any], log: Any, key: str | None = None
) -> tuple[dict[str, Any], str, str]:
    """Trigger ``PIPELINE`` with ``conf`` and print each task as it ends; the tasks' results, the run
    id and its state. The task durations go to the run's ``.tasks.json`` (under ``key``, if given)."""
    dag_run = client.trigger(PIPELINE, conf=conf)
    run_id = dag_run["dag_run_id"]
    console.print(f"   run {run_id}: {client.url}/dags/{PIPELINE}/runs/{run_id}")
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    report = _reporter(client, PIPELINE, run_id, results, durations)
    timeout = get_settings().airflow.task_timeout_seconds
    state = client.follow(PIPELINE, run_id, report, task_timeout_s=timeout)
    path, figures = log.with_suffix(".tasks.json"), {"run_id": run_id, "state": state, "tasks": durations}
    if key is not None:
        figures = {**json.loads(path.read_text()), key: figures}
    path.write_text(json.dumps(figures))
    return results, run_id, state


def _reporter(
    client: Any, dag_id: str, run_id: str, results: dict[str, Any], durations: dict[str, float]
) -> Callable[[Any], None]:
    """What prints each task of a run as it starts and ends (its duration, its result's first line,
    a failed task's log tail) and keeps its result and duration."""

    def report(task: Any) -> None:
        if task.state == "running":
            console.print(f"   .. {task.name}")
        elif task.state in ("success", "skipped", "failed", "upstream_failed"):
            durations[task.name] = round(task.duration_s or 0.0, 1)
            colour = {"success": "green", "skipped": "yellow"}.get(task.state, "red")
            result = client.xcom(dag_id, run_id, task) if task.state == "success" else None
            summary = result.get("summary", "") if isinstance(result, dict) else ""
            summary = summary.splitlines()[0] if summary else ""  # the step prints the details
            if isinstance(result, dict):
                results[task.task_id] = result
            line = f" {task.name:<26} {task.duration_s or 0:6.1f} s  {summary}"
            console.print(Text.assemble("   ", (f"{task.state:<7}", colour), line))
            if task.state == "failed":
                tail = client.task_log(dag_id, run_id, task).strip().splitlines()[-12:]
                console.print("\n".join(f"      | {line[:200]}" for line in tail), markup=False)

    return report


ARCHIVE_TIMEOUT_S = 180.0


def _days_traffic(step: int, project: str, model: str, proj: Any, url: str, client: Any, log: Any) -> None:
    """The loop closed on the demo: the next day's transactions land and are served over REST, with
    their ``tid``, as that day's traffic; the monitor archives the calls; the day's batch then goes
    through the ETL (an ingest-only run of the pipeline: its labels and features land), and the
    performance and skew tasks judge what was served. Prints realized beside estimated performance,
    and the skew report."""
    import httpx

    from fjord.airflow.client import PipelineFailed
    from fjord.cli.stack_cmd import start_monitors
    from jobs.etl.demo_data import DemoSpec, generate, recent_start
    from jobs.monitor.archive import InferenceArchive
    from jobs.monitor.store import MonitorStore
    from jobs.performance.job import window_line
    from jobs.serve import serving
    from jobs.skew.job import report_lines

    t = _step(step, "A day of traffic: its transactions over REST, then its labels land -> performance, skew")
    start_monitors(lambda line: console.print(f"   {line}"))
    days = DEMO_DAYS + 1  # the same first days, and one more (jobs/etl/demo_data.py)
    spec = DemoSpec(rows=DEMO_ROWS * days // DEMO_DAYS, days=days, seed=42, start=recent_start(DEMO_DAYS))
    (batch,) = generate(proj.fs, spec, days=[DEMO_DAYS])
    frame = proj.fs.read_parquet(f"Resources/landing/{batch}/transactions.parquet").to_pandas()
    traffic = [
        {"tid": int(r.tid), "cc_num": int(r.cc_num), "amount": float(r.amount), "ts": r.ts.isoformat(),
         "lat": float(r.lat), "lon": float(r.lon), "category": str(r.category)}
        for r in frame.sort_values(["ts", "tid"]).itertuples()
    ]  # fmt: skip
    archive = InferenceArchive(proj.fs, model)
    before = archive.stats()["requests"]
    began = time.monotonic()
    with httpx.Client(timeout=60, headers=serving.auth_headers(project=project)) as http:
        for start in range(0, len(traffic), 100):
            calls = {"instances": traffic[start : start + 100]}
            http.post(f"{url}/v1/models/{model}:predict", json=calls).raise_for_status()
    sent, calls_made = time.monotonic() - began, (len(traffic) + 99) // 100
    console.print(f"   {batch}: {len(traffic):,} transactions in {calls_made} REST calls, {sent:.1f} s")
    while archive.stats()["requests"] < before + calls_made:
        if time.monotonic() - began > ARCHIVE_TIMEOUT_S:
            raise PipelineFailed(f"the monitor archived not all the day's calls in {ARCHIVE_TIMEOUT_S:.0f} s",
                                 hint=f"fjord monitor archive -p {project} -m {model}; fjord logs "
                                      f"monitor/{project}/{model}")  # fmt: skip
        time.sleep(1)
    console.print(f"   the monitor archived them: {archive.uri}")
    console.print(f"   {batch}'s batch (transactions, labels) through the ETL: an ingest-only {PIPELINE} run")
    _, run_id, state = _follow(client, {"project": project, "batches": [batch], "train": False}, log, "day")
    if state != "success":
        raise PipelineFailed(f"the ingest-only {PIPELINE} run {run_id} of {batch} failed",
                             hint=f"its log: {client.url}/dags/{PIPELINE}/runs/{run_id}")  # fmt: skip
    store = MonitorStore(proj.fs, model)
    console.print("   performance, realized (labels joined by tid) beside estimated (CBPE, no labels):")
    for w in store.performance()[-3:]:
        console.print(f"     {window_line(w)}", markup=False)
    console.print("   training/serving skew (the inputs served against the ETL's features, by tid):")
    for line in report_lines(store.skew())[:14]:
        console.print(f"     {line}", markup=False)
    _done(t, f"fjord monitor performance -p {project} · fjord monitor skew -p {project}")


RETRAIN = "fraud_retrain"
DRIFT_TIMEOUT_S = 300.0


def _monitor_drift(
    step: int, project: str, model: str, proj: Any, batch: str, url: str, client: Any, log: Any
) -> tuple[str, str]:
    """Start the model's monitor, send drifted traffic over REST until it raises a drift alert, and
    show the retraining run the alert started in Airflow; the dashboard's URL and the run's id. The
    delays from the first drifted request to the alert and to the run go to the run's ``.tasks.json``."""
    import threading

    import httpx

    from fjord.airflow.client import PipelineFailed, drift_asset
    from fjord.cli.stack_cmd import start_monitors
    from jobs.monitor.store import MonitorStore
    from jobs.serve import serving

    t = _step(step, "Streaming monitor: drifted traffic over REST -> drift alert -> fraud_retrain in Airflow")
    client.wait_for_dag(RETRAIN)
    client.unpause(RETRAIN)  # an event on its asset starts a run only when it is switched on
    urls = start_monitors(lambda line: console.print(f"   {line}"))
    store = MonitorStore(proj.fs, model)
    known = {a["alert_id"] for a in store.alerts()}
    # A later world: amounts five times larger, spent 1,000 km from the card's last place, today.
    now = datetime.now(UTC).isoformat()
    drifted = [  # made up, so without a transaction id: no label will ever join them
        {**t, "tid": None, "amount": t["amount"] * 5, "ts": now, "lat": t["lat"] + 9, "lon": t["lon"] + 9}
        for t in _landed_transactions(proj, batch, first=2_000)
    ]
    stop, sent, first = threading.Event(), [0], [0.0]

    def send() -> None:
        with httpx.Client(timeout=30, headers=serving.auth_headers(project=project)) as http:
            while not stop.is_set():
                for start in range(0, len(drifted), 50):
                    if stop.is_set():
                        return
                    first[0] = first[0] or time.time()
                    http.post(
                        f"{url}/v1/models/{model}:predict", json={"instances": drifted[start : start + 50]}
                    )
                    sent[0] += 1
                    stop.wait(0.2)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    began = time.monotonic()
    alert = None
    try:
        while alert is None:
            if time.monotonic() - began > DRIFT_TIMEOUT_S:
                raise PipelineFailed(f"no drift alert within {DRIFT_TIMEOUT_S:.0f} s of drifted traffic",
                                          hint=f"fjord monitor status -p {project} -m {model}; fjord logs "
                                               f"monitor/{project}/{model}")  # fmt: skip
            time.sleep(2)
            # posted: it started a retraining; suppressed: one started within the cooldown (a second
            # `fjord run` within the hour) is already this drift's retraining
            alert = next((a for a in store.alerts() if a["alert_id"] not in known
                          and a["state"] in ("posted", "suppressed")), None)  # fmt: skip
    finally:
        stop.set()
        sender.join(timeout=30)
    console.print(f"   sent {sent[0]} requests of 50 drifted transactions")
    console.print(f"   alert {alert['kind']} in window {alert['window_start']:%H:%M:%S} "
                  f"(v{alert['version']}): {alert['message']}")  # fmt: skip
    raised_at = (alert["posted_at"] or alert["created_at"]).timestamp()
    suppressed = alert["state"] == "suppressed"
    if suppressed:
        started = _retraining_within_cooldown(store, alert)
        cooldown = get_settings().monitor.cooldown_seconds
        console.print(f"   -> suppressed: the drift alert of {started['window_start']:%H:%M:%S} started a "
                      f"retraining less than monitor.cooldown_seconds ({cooldown} s) before")  # fmt: skip
        alert = started
    else:
        console.print(f"   -> Airflow asset event {alert['event_id']} on {drift_asset(project, model)}")
    run_id = alert["dag_run_id"] or _created_run(client, drift_asset(project, model), alert)
    console.print(f"   -> {RETRAIN} run {run_id}: {client.url}/dags/{RETRAIN}/runs/{run_id}")
    created = datetime.fromisoformat(client.dag_run(RETRAIN, run_id)["queued_at"]).timestamp()
    figures = {
        "window_seconds": get_settings().monitor.window_seconds,
        "alert_after_s": round(raised_at - first[0], 1),
        "retraining_run_after_s": round(created - first[0], 1),
        "requests_sent": sent[0],
    }
    tasks = log.with_suffix(".tasks.json")
    tasks.write_text(json.dumps({**json.loads(tasks.read_text()), "monitor": figures}))
    run = "" if suppressed else f" and {RETRAIN} run {figures['retraining_run_after_s']:.0f} s"
    retraining = "; the retraining is the earlier alert's run" if suppressed else ""
    _done(
        t,
        f"alert {figures['alert_after_s']:.0f} s{run} after the first drifted request "
        f"({figures['window_seconds']} s windows){retraining}",
    )
    return urls["dashboard"], run_id


def _retraining_within_cooldown(store: Any, suppressed: dict[str, Any]) -> dict[str, Any]:
    """The posted alert whose retraining kept ``suppressed`` from starting another: the model's
    latest posted alert before it."""
    posted = [a for a in store.alerts() if a["model"] == suppressed["model"] and a["state"] == "posted"
              and a["window_start"] <= suppressed["window_start"]]  # fmt: skip
    return max(posted, key=lambda a: a["window_start"])


BLESS_TASK = "model.bless"


def _retraining_judged(step: int, run_id: str, client: Any) -> None:
    """Follow the drift alert's fraud_retrain run until its gate decided: the candidate against the
    champion on the held-out split, then replayed on the serving's last 24 hours of traffic (the
    drifted calls, and the day whose labels landed); print the decision and its reasons. The
    deployment, if any, goes on in Airflow."""
    from fjord.airflow.client import TASK_DONE, PipelineFailed, task_run_id
    from fjord.lineage import get_run

    t = _step(step, f"The retraining's candidate, judged on the traffic it would have served ({RETRAIN})")
    report = _reporter(client, RETRAIN, run_id, {}, {})
    timeout = get_settings().airflow.task_timeout_seconds
    decided = lambda task: task.task_id == BLESS_TASK and task.state in TASK_DONE  # noqa: E731
    state = client.follow(RETRAIN, run_id, report, task_timeout_s=timeout, until=decided)
    if state not in ("success", "skipped"):  # skipped: the gate refused the candidate
        raise PipelineFailed(f"{RETRAIN} run {run_id}: its gate did not decide ({state})",
                             hint=f"{client.url}/dags/{RETRAIN}/runs/{run_id}")  # fmt: skip
    record = get_run(task_run_id("bless", RETRAIN, run_id, BLESS_TASK))
    blessing = record.params.get("blessing") or {}
    version = record.params.get("version") or "?"
    static = (f"held-out ROC AUC {_auc(blessing.get('candidate'))} against champion "
              f"v{blessing.get('champion_version')}'s {_auc(blessing.get('champion'))}")  # fmt: skip
    console.print(f"   candidate fraud v{version}: {static}")
    replay = blessing.get("replay") or {}
    if replay.get("rows"):
        console.print(f"   replayed on {replay['rows']:,} served rows of the last 24 h: "
                      f"{replay['agreement']:.1%} of decisions agree ({replay['flips']:,} flipped), "
                      f"score PSI {replay['psi']:.3f}")  # fmt: skip
        if replay.get("auc_difference") is not None:
            ci = [c for c in replay.get("auc_difference_ci") or [] if isinstance(c, int | float)]
            interval = f", 95% CI {ci[0]:+.4f}..{ci[1]:+.4f}" if len(ci) == 2 else ""
            console.print(f"   realized ROC AUC {replay['auc_difference']:+.4f} against the served"
                          f"{interval}, on {replay['labelled']:,} labelled rows")  # fmt: skip
    decision = blessing.get("decision", state)
    reasons = "; ".join(replay.get("reasons") or []) if replay.get("decision") == "refused" else ""
    after = (f"the deployment goes on in Airflow: {client.url}/dags/{RETRAIN}/runs/{run_id}"
             if state == "success" else "nothing deployed")  # fmt: skip
    console.print(f"   -> {decision}" + (f": {reasons}" if reasons else "") + f"; {after}")
    _done(t, f"replay {replay.get('decision', 'not run')}, candidate {decision}")


def _auc(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def _created_run(client: Any, asset: str, alert: dict[str, Any], timeout_s: float = 300.0) -> str:
    """The DAG run an alert's asset event created (the scheduler creates it within seconds, or a
    few minutes on a machine busy with other work)."""
    from fjord.airflow.client import AirflowError, PipelineFailed

    deadline = time.monotonic() + timeout_s
    since = alert["posted_at"] - timedelta(minutes=1)  # a minute's slack for the clocks
    while time.monotonic() < deadline:
        try:
            for event in client.asset_events(asset):
                runs = event.get("created_dagruns") or []
                if (event.get("extra") or {}).get("alert_id") == alert["alert_id"] and runs:
                    return str(runs[0]["run_id"])
        except AirflowError:
            # Airflow 3.3.2 fails every read of the events while a run one of them created is still
            # queued (apache/airflow#71360, fixed after 3.3.2): a 500, or, when the exception escapes
            # the ASGI app, a connection reset. If Airflow is really down, the read below says so.
            pass
        # Else, or while the event does not name its run yet: the newest run the asset triggered
        # since the alert was posted.
        for run in client.dag_runs(RETRAIN):
            queued = datetime.fromisoformat(run["queued_at"]) if run.get("queued_at") else None
            if run.get("run_type") == "asset_triggered" and queued and queued >= since:
                return str(run["dag_run_id"])
        time.sleep(2)
    raise PipelineFailed(f"the alert's asset event started no {RETRAIN} run in {timeout_s:.0f} s")


def _model_provenance(step: int, name: str, version: int, uri: str, dataset_version: int) -> None:
    t = _step(step, "Provenance of the model: model version -> training run -> training data -> raw batches")
    model = lineage_graph(uri, str(version))
    made_by = model.run.run_id if model.run else "?"
    console.print(f"   model {name} v{version} <- train run {made_by}")
    landed = sorted({source.uri.rsplit("/", 2)[-2] for source in raw_sources(model)})
    console.print(f"   <- training dataset v{dataset_version} <- raw landing batches: {', '.join(landed)}")
    _done(t)


def _run_local(project: str, cache: bool = True) -> None:
    """The pipeline's steps in this process (``--local``): the same definition, order and arguments
    as the DAG's (fjord/pipeline.py), each stage job called as its task would run it."""
    pipeline = training_pipeline(load_pipeline_config())
    proj, batches = _prepare(project, 1)

    t = _step(4, "The pipeline's steps in this process, in the DAG's order (fjord/pipeline.py)")
    values = {**pipeline.defaults(), "project": project}
    results: dict[str, Any] = {}
    refused = ""
    for step in pipeline.steps():
        for batch in batches if step is pipeline.ingest else [None]:
            name = f"{step.task_id}[{batch}]" if batch else step.task_id
            if refused:
                console.print(Text.assemble("   ", ("skipped", "yellow"), f" {name:<26} the gate refused"))
                continue
            args = step.arguments(
                {**values, "batch": batch}.__getitem__, lambda task, key: results[task][key]
            )
            started = time.perf_counter()
            try:
                results[step.task_id] = run_step(proj, step.stage, args, cache)
            except FjordError as exc:
                if exc.exit_code != GATE_REFUSED:
                    raise
                refused = exc.one_line()
                console.print(Text.assemble("   ", ("refused", "yellow"), f" {name:<26} {refused}"))
                continue
            took = time.perf_counter() - started
            summary = results[step.task_id]["summary"].splitlines()[0]
            console.print(Text.assemble("   ", ("success", "green"), f" {name:<26} {took:6.1f} s  {summary}"))
    _done(t)

    dataset = results["training_dataset"]
    t = _step(5, "Provenance: walk back from the training dataset to the landing batches")
    version = dataset["training_dataset_version"]
    graph = lineage_graph(dataset["uri"], str(version))
    for node in graph.inputs:
        made_by = node.run.stage if node.run else "?"
        console.print(
            f"   training dataset v{version} <- {node.artifact.uri.rsplit('/', 1)[-1]} commit "
            f"{node.artifact.version} <- {made_by} run"
        )
    landed = sorted({source.uri.rsplit("/", 2)[-2] for source in raw_sources(graph)})
    console.print(f"   raw landing batches: {', '.join(landed)}")
    _done(t)

    trained = results["model.train"]
    name, model_version = trained["model_name"], trained["model_version"]
    _model_provenance(6, name, model_version, trained["model_uri"], version)
    from jobs.serve import serving  # a stage: the CLI loads it only when the job runs

    served = serving.url(project=project)
    if refused:
        console.print(f"   not deployed: {refused}; the champion keeps serving")
    _predict_and_trace(7, project, name, model_version, proj, batches[-1], served)

    console.print(
        f"\nNext: fjord featurestore list {project} · fjord featurestore statistics "
        f"{project} transactions_features · fjord lineage runs --project {project}"
    )
    console.print(f"      validation reports: {proj.fs.uri('Logs/validation')}/<run id>/index.html")
    console.print(
        f"      experiments: fjord experiment list · fjord experiment show {trained['search']} · "
        f"MLflow UI {tracking_uri()} (fjord mlflow stop)"
    )
    console.print(
        f"      serving: curl -s {served}/v1/models/{name}:predict -d @request.json · "
        f"fjord model list --project {project} · fjord kafka tail {name}_inference_log · "
        f"metrics {served}/monitoring/prometheus/metrics · stop: fjord model stop --project {project}"
    )


GATE_REFUSED = 20  # DeployRejected's exit code: a decision, which skips the deploy (as in Airflow)


def run_step(project: Any, stage: str, args: dict[str, Any], cache: bool) -> dict[str, Any]:
    """Run ``stage``'s job in this process with ``args`` (its spec's fields, validated as the
    command line's are), or reuse an earlier run's result as a task would (fjord/stepcache.py); the
    result as a task's XCom holds it."""
    key, reused = stepcache.look_up(
        project, stage, args, cache=cache, run_id=new_run_id(stage), parent_run_id=None
    )
    if reused is not None:
        return reused
    module, spec_class = STAGES[stage].spec.split(":")
    job = importlib.import_module(module)  # a stage: loaded only when its step runs
    result = result_document(job.run(getattr(job, spec_class)(**args)))
    if key and result.get("run_id"):
        stepcache.remember(result["run_id"], key, result)
    return result


SAMPLES = 5


def _landed_transactions(proj: Any, batch: str, *, first: int = 0, last: int = 0) -> list[dict[str, Any]]:
    """The ``first`` (or ``last``) transactions of a landed batch, as a client sends them to the model,
    with the transaction id ``tid`` (a passthrough field: logged with the call, never the model's)."""
    frame = proj.fs.read_parquet(f"Resources/landing/{batch}/transactions.parquet").to_pandas()
    frame = frame.head(first) if first else frame.tail(last)
    return [
        {"tid": int(r.tid), "cc_num": int(r.cc_num), "amount": float(r.amount), "ts": r.ts.isoformat(),
         "lat": float(r.lat), "lon": float(r.lon), "category": str(r.category)}
        for r in frame.itertuples()
    ]  # fmt: skip


def _predict_and_trace(
    step: int, project: str, model_name: str, model_version: int, proj: Any, batch: str, url: str
) -> None:
    """Predict over REST, read the calls' records back from Kafka, walk one prediction's lineage."""
    import httpx

    from fjord import kafka
    from jobs.serve import serving

    t = _step(
        step, "Predictions over REST: a transaction (card, amount, time, place) -> online features -> model"
    )
    instances = _landed_transactions(proj, batch, last=SAMPLES)
    topic = serving.get_kafka_topic(model_name, project=project)
    kafka.ensure_topic(topic, retention_ms=7 * 86_400_000)
    before = kafka.end_offsets(topic)  # step 12 reads from here, however long the topic is
    answer = httpx.post(
        f"{url}/v1/models/{model_name}:predict", json={"instances": instances}, timeout=60,
        headers=serving.auth_headers(project=project),
    )  # fmt: skip
    answer.raise_for_status()
    inference_id = answer.headers["x-fjord-inference-id"]
    status = serving.get_status(model_name, project=project)
    for instance, score in zip(instances, answer.json()["predictions"], strict=True):
        console.print(
            f"   card {instance['cc_num']} {instance['amount']:>9.2f} {instance['category']:<14} -> "
            f"fraud probability {score:.4f}"
        )
    console.print(f"   served by {model_name} labels {status['labels']}, versions {status['versions']}")
    _done(t, f"POST {url}/v1/models/{model_name}:predict")

    t = _step(step + 1, "Inference log: the call's records, read back from Kafka")
    found = {}
    for record in kafka.tail(topic, start=before, timeout_s=20):
        value = json.loads(record.value)
        if value["inferenceId"] == inference_id:
            found[value["type"]] = value
            if len(found) == 2:
                break
    for kind, value in sorted(found.items()):
        shown = value.get("inputs") or value.get("outputs")
        console.print(
            f"   {topic} {kind:<8} id {inference_id[:12]} model {value['modelName']} v{value['modelVersion']}"
            f" {', '.join(sorted(shown))[:80] if shown else ''}"
        )
    _done(t, f"{len(found)} records of inference {inference_id[:12]}")

    t = _step(
        step + 2, "Lineage of one prediction: served version -> model run -> training data -> raw batches"
    )
    version = found.get("response", {}).get("modelVersion", model_version)
    deployment = lineage_graph(serving.serving_uri(project, model_name), str(version))
    deployed_by = deployment.run.run_id if deployment.run else "?"
    console.print(
        f"   prediction {inference_id[:12]} <- served {model_name} v{version} <- deploy run {deployed_by}"
    )
    commits = []
    for node in walk(deployment):
        name, made_by = node.artifact.uri.rsplit("/", 1)[-1], node.run.run_id if node.run else "?"
        if node.artifact.kind == "model":
            console.print(f"   <- model {model_name} v{node.artifact.version} <- train run {made_by}")
        elif node.artifact.kind == "training_dataset":
            console.print(
                f"   <- training dataset {node.artifact.uri.rsplit('/', 2)[-2]} v{node.artifact.version}"
            )
        elif node.artifact.kind == "feature_group":
            commits.append(f"{name} commit {node.artifact.version}")
    console.print(f"   <- feature group commits: {', '.join(commits)}")
    landed = sorted({source.uri.rsplit("/", 2)[-2] for source in raw_sources(deployment)})
    console.print(f"   <- raw landing batches: {', '.join(landed)}")
    _done(t)

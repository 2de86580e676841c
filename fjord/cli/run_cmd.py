"""``fjord run``: the platform's main job on the configured stack (``make run``).

It runs every stage that exists, in pipeline order, and prints what a newcomer needs to see:

1. the demo project, 2. its Python environment, 3. a Spark session in that environment,
4. demo data: daily batches of card transactions landing in ``Resources/landing/``,
5. the Spark ETL and Great Expectations validation job, publishing each batch to the feature store,
6. the feature pipeline job: a feature view, point-in-time training data, an online feature vector,
7. the lineage of that training data, walked back to the landing batches,
8. training: a random search with early stopping on Spark executors, the best configuration
   retrained, evaluated, optimized and registered in MLflow as the ``candidate``,
9. the model's provenance: model version -> training run -> training dataset -> raw batches,
10. deployment: the candidate blessed against the champion and served by the TF-Serving-compatible
    model server (REST and gRPC), with the card features online for each request,
11. predictions over REST for sample transactions (card, amount, time, place),
12. their inference log records, read back from Kafka,
13. the lineage of one prediction: served version -> model run -> training data -> raw batches.

Monitoring joins here when it lands, until the Airflow DAG runs it all.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import typer

from fjord.cli.output import console, library_output_to
from fjord.config import get_settings
from fjord.envs import build_environment
from fjord.experiment.tracking import tracking_uri
from fjord.lineage import lineage_graph, raw_sources, walk
from fjord.projects import ensure_project
from fjord.spark import get_spark

DEMO_ROWS = 20_000
DEMO_DAYS = 2


def _step(number: int, text: str) -> float:
    console.print(f"\n[bold cyan]{number}.[/bold cyan] [bold]{text}[/bold]")
    return time.perf_counter()


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Numbers as a person reads them (3 significant digits)."""
    return {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in values.items()}


def _done(started: float, text: str = "") -> None:
    console.print(f"   [green]ok[/green] {text} [dim]({time.perf_counter() - started:.1f} s)[/dim]")


def run(
    project: str = typer.Option("fraud", help="Project to run the pipeline in (created if missing)."),
) -> None:
    """Run the platform's main job on the configured stack (the embedded defaults unless configured)."""
    import featurestore  # stages: the CLI loads them only when the job runs
    from jobs.etl.demo_data import DemoSpec, generate
    from jobs.etl.job import EtlSpec
    from jobs.etl.job import run as run_etl
    from jobs.features.job import FeaturesSpec
    from jobs.features.job import run as run_features
    from jobs.train.job import TrainSpec
    from jobs.train.job import run as run_train

    settings = get_settings()
    log = settings.home / "logs" / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    console.print("[bold]Fjord main job[/bold]")
    console.print(f"   library output     {log} (--debug shows it here)")
    console.print(f"   shared filesystem  {settings.storage.root}")
    console.print(f"   spark master       {settings.spark.master}")
    console.print(f"   metadata           {settings.metadata.url}")
    console.print(
        f"   feature store      join engine {settings.featurestore.join_engine.type}, "
        f"online store {settings.featurestore.online_store.type}"
    )

    with library_output_to(log):
        t = _step(1, f"Project '{project}'")
        proj = ensure_project(project, description="Card fraud detection (the flagship demo)")
        _done(t, proj.root_uri)

        t = _step(2, "Project Python environment (platform packages + the project's spec)")
        env = build_environment(proj)
        _done(t, f"{env.key}, lock {env.lock_hash}, additions: {', '.join(env.additions) or 'none'}")

        t = _step(3, "Spark session in the project environment")
        spark = get_spark(proj, app_name="fjord-main")
        _done(t, f"Spark {spark.version} on {spark.sparkContext.master}")

        t = _step(4, "Demo data: daily batches of card transactions land in Resources/landing/")
        batches = generate(proj.fs, DemoSpec(rows=DEMO_ROWS, days=DEMO_DAYS, seed=42))
        _done(t, f"{len(batches)} batches, {DEMO_ROWS:,} transactions: {batches[0]} .. {batches[-1]}")

        t = _step(5, "Spark ETL + Great Expectations validation -> feature store (one commit per group)")
        for batch in batches:
            console.print(f"   {run_etl(EtlSpec(project=project, batch=batch)).summary()}")
        _done(t)

        t = _step(
            6, "Feature pipeline job: feature view, point-in-time training data, an online feature vector"
        )
        features = run_features(FeaturesSpec(project=project))
        console.print(f"   {features.summary()}")
        fs = featurestore.connect(project)
        view = fs.get_feature_view(features.view, features.view_version)
        sample = fs.get_feature_group("fraud_labels", 1).read().iloc[0]
        tid, cc_num = int(sample.tid), int(sample.cc_num)
        vector = view.get_feature_vector({"tid": tid, "cc_num": cc_num}, return_type="dict")
        _done(t, f"online vector of tid {tid}: {_rounded(vector)}")
        version = features.training_dataset_version

        t = _step(7, "Provenance: walk back from the training dataset to the landing batches")
        graph = lineage_graph(features.uri, str(version))
        for node in graph.inputs:
            made_by = node.run.stage if node.run else "?"
            console.print(
                f"   training dataset v{version} <- {node.artifact.uri.rsplit('/', 1)[-1]} commit "
                f"{node.artifact.version} <- {made_by} run"
            )
        landed = sorted({source.uri.rsplit("/", 2)[-2] for source in raw_sources(graph)})
        console.print(f"   raw landing batches: {', '.join(landed)}")
        _done(t)

        t = _step(
            8, "Training: random search with early stopping on Spark, retrain, evaluate, optimize, register"
        )
        trained = run_train(
            TrainSpec(
                project=project,
                feature_view=features.view,
                feature_view_version=features.view_version,
                training_dataset_version=version,
                samples=4,
                epochs=2,
            )
        )
        console.print(f"   {trained.summary()}")
        _done(t)

        t = _step(9, "Provenance of the model: model version -> training run -> training data -> raw batches")
        model = lineage_graph(trained.model_uri, str(trained.model_version))
        made_by = model.run.run_id if model.run else "?"
        console.print(f"   model {trained.model_name} v{trained.model_version} <- train run {made_by}")
        landed = sorted({source.uri.rsplit("/", 2)[-2] for source in raw_sources(model)})
        console.print(f"   <- training dataset v{version} <- raw landing batches: {', '.join(landed)}")
        _done(t)

        served = _serve(project, trained, proj, batches[-1])

        console.print(
            f"\n[bold]Next[/bold]: fjord featurestore list {project} · fjord featurestore statistics "
            f"{project} transactions_features · fjord lineage runs --project {project}"
        )
        console.print(f"      validation reports: {proj.fs.uri('Logs/validation')}/<run id>/index.html")
        console.print(
            f"      experiments: fjord experiment list · fjord experiment show {trained.search} · "
            f"MLflow UI {tracking_uri()} (fjord mlflow stop)"
        )
        console.print(
            f"      serving: curl -s {served}/v1/models/{trained.model_name}:predict -d @request.json · "
            f"fjord model list --project {project} · fjord kafka tail {trained.model_name}_inference_log · "
            f"metrics {served}/monitoring/prometheus/metrics · stop: fjord model stop --project {project}"
        )
    console.print("[dim]The streaming monitor joins this job when it lands.[/dim]")


SAMPLES = 5


def _serve(project: str, trained: Any, proj: Any, batch: str) -> str:
    """Steps 10-13: deploy through the gate, predict over REST, read the log back, walk a prediction's
    lineage; the server's URL."""
    import httpx
    import pyarrow.parquet as pq

    from fjord import kafka
    from jobs.serve import serving
    from jobs.serve.deploy import DeployRejected, DeploySpec
    from jobs.serve.deploy import run as run_deploy

    t = _step(
        10, "Deployment: bless the candidate against the champion, serve it (REST + gRPC, TF Serving's API)"
    )
    try:
        deployed = run_deploy(
            DeploySpec(
                project=project,
                model_name=trained.model_name,
                version=trained.model_version,
                feature_view="fraud_serving",
                transformer="jobs.serve.transformers:fraud_transactions",
            )
        )
        console.print(f"   {deployed.summary()}")
    except DeployRejected as exc:
        console.print(f"   [yellow]not deployed[/yellow]: {exc}; the champion keeps serving")
    url = serving.url(project=project)
    _done(t)

    t = _step(
        11, "Predictions over REST: a transaction (card, amount, time, place) -> online features -> model"
    )
    with proj.fs.open(f"Resources/landing/{batch}/transactions.parquet") as handle:
        frame = pq.read_table(handle).to_pandas().tail(SAMPLES)
    instances = [
        {"cc_num": int(r.cc_num), "amount": float(r.amount), "ts": r.ts.isoformat(), "lat": float(r.lat),
         "lon": float(r.lon), "category": str(r.category)}
        for r in frame.itertuples()
    ]  # fmt: skip
    topic = serving.get_kafka_topic(trained.model_name, project=project)
    kafka.ensure_topic(topic, retention_ms=7 * 86_400_000)
    before = kafka.end_offsets(topic)  # step 12 reads from here, however long the topic is
    answer = httpx.post(
        f"{url}/v1/models/{trained.model_name}:predict", json={"instances": instances}, timeout=60
    )
    answer.raise_for_status()
    inference_id = answer.headers["x-fjord-inference-id"]
    status = serving.get_status(trained.model_name, project=project)
    for instance, score in zip(instances, answer.json()["predictions"], strict=True):
        console.print(
            f"   card {instance['cc_num']} {instance['amount']:>9.2f} {instance['category']:<14} -> "
            f"fraud probability {score:.4f}"
        )
    console.print(
        f"   served by {trained.model_name} labels {status['labels']}, versions {status['versions']}"
    )
    _done(t, f"POST {url}/v1/models/{trained.model_name}:predict")

    t = _step(12, "Inference log: the call's records, read back from Kafka")
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

    t = _step(13, "Lineage of one prediction: served version -> model run -> training data -> raw batches")
    version = found.get("response", {}).get("modelVersion", trained.model_version)
    deployment = lineage_graph(serving.serving_uri(project, trained.model_name), str(version))
    deployed_by = deployment.run.run_id if deployment.run else "?"
    console.print(
        f"   prediction {inference_id[:12]} <- served {trained.model_name} v{version} "
        f"<- deploy run {deployed_by}"
    )
    commits = []
    for node in walk(deployment):
        name, made_by = node.artifact.uri.rsplit("/", 1)[-1], node.run.run_id if node.run else "?"
        if node.artifact.kind == "model":
            console.print(f"   <- model {trained.model_name} v{node.artifact.version} <- train run {made_by}")
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
    return url

"""Every stage on an ``hdfs://`` root (the embedded HDFS) and on an ``s3://`` root (SeaweedFS): the ETL
job, a Spark DataFrame insert, the Spark point-in-time join, and an experiment whose trial files
reach MLflow. Spark reads and writes through Hadoop's HDFS client and S3A; Python through hdfs-native
and s3fs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import featurestore
from fjord import experiment
from fjord.config import reset_settings
from fjord.experiment.tracking import client
from fjord.fs import SharedFS
from fjord.projects import create_project
from fjord.services.s3 import ACCESS_KEY, BUCKET
from jobs.etl.demo_data import DemoSpec, generate
from jobs.etl.job import EtlSpec, run
from tests.conftest import mlflow_at, use_mlflow

pytestmark = [pytest.mark.spark, pytest.mark.slow]
T0 = pd.Timestamp("2024-01-01", tz="UTC")


@pytest.fixture(params=["hdfs", "s3"])
def root(request, monkeypatch, spark) -> str:
    """A fresh storage root on the embedded HDFS or S3, configured as storage.root."""
    if request.param == "hdfs":
        uri = f"{request.getfixturevalue('hdfs_server')}/fjord-{uuid.uuid4().hex[:8]}"
    else:
        uri = f"s3://{BUCKET}/fjord-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("FJORD_STORAGE__S3_ENDPOINT_URL", request.getfixturevalue("s3_endpoint"))
        monkeypatch.setenv("FJORD_STORAGE__S3_KEY", ACCESS_KEY)
        monkeypatch.setenv("FJORD_STORAGE__S3_SECRET", request.getfixturevalue("s3_secret"))
    monkeypatch.setenv("FJORD_STORAGE__ROOT", uri)
    reset_settings()
    return uri


def test_etl_job_publishes_to_the_feature_store(root: str) -> None:
    project = create_project("fraud")
    assert project.fs.uri().startswith(root)
    generate(project.fs, DemoSpec(rows=3000, days=1, seed=3))
    batch = project.fs.listdir("Resources/landing")[0]
    result = run(EtlSpec(project="fraud", batch=batch))
    assert result.validation.success and set(result.commits.values()) == {0}
    store = featurestore.connect("fraud")
    tx = store.get_feature_group("transactions_features", 1)
    assert len(tx.read()) == result.rows_in
    assert all(uri.startswith(root.split("://")[0] + "://") for uri in tx.snapshot().file_uris)


def test_spark_insert_and_spark_point_in_time_join(root: str, spark) -> None:
    create_project("fraud")
    store = featurestore.connect("fraud")
    frame = spark.range(0, 2000).selectExpr(
        "id % 100 AS cc_num",
        "timestamp_micros(1704067200000000 + id * 60000000) AS ts",
        "cast(id AS double) AS amount",
    )
    tx = store.get_or_create_feature_group("tx", 1, primary_key=["cc_num"], event_time="ts")
    tx.insert(frame)  # written by Spark's executors onto the root, committed in place
    assert tx.read(dataframe_type="spark").count() == 2000
    assert SharedFS(tx.location).find(suffix=".parquet")
    labels = store.get_or_create_feature_group("labels", 1, primary_key=["cc_num"], event_time="ts")
    labels.insert(
        pd.DataFrame(
            {
                "cc_num": [1, 2, 3],
                "ts": [T0 + pd.Timedelta(minutes=m) for m in (150, 5, 0)],
                "is_fraud": [1, 0, 0],
            }
        )
    )
    query = labels.select_all().join(tx.select(["amount"]), on=["cc_num"], prefix="tx_")
    by_spark = query.read(engine="spark")
    assert by_spark.equals(query.read(engine="duckdb"))
    # Key 1 at minute 150: its newest row is id 101 (minute 101); key 3 at minute 0: id 3 is later.
    by_key = by_spark.set_index("cc_num").tx_amount
    assert by_key[1] == 101.0 and by_key[2] == 2.0 and pd.isna(by_key[3])


def test_a_multi_file_spark_frame_publishes_through_duckdb(root: str, spark) -> None:
    """Spark writes the staged rows as several files of several row groups; the publish validates
    them with DuckDB, whose threads read one remote file at once (hdfs-native's reader failed with
    "Already borrowed")."""
    create_project("fraud")
    store = featurestore.connect("fraud")
    frame = spark.range(0, 400_000, numPartitions=4).selectExpr(
        "id % 1000 AS cc_num",
        "timestamp_micros(1704067200000000 + id * 1000000) AS ts",
        "rand(7) AS amount",
        "cast(id AS string) AS note",
    )
    spark.conf.set("parquet.block.size", str(1 << 19))  # several row groups per file
    try:
        big = store.get_or_create_feature_group("big", 1, primary_key=["cc_num"], event_time="ts")
        big.insert(frame)
    finally:
        spark.conf.unset("parquet.block.size")
    assert len(SharedFS(big.location).find(suffix=".parquet")) >= 4
    read = big.read()
    assert len(read) == 400_000 and read.note.astype(int).sum() == sum(range(400_000))


def test_a_model_deploys_and_serves_from_the_root(root: str, tmp_path: Path) -> None:
    """A version on the root is served: the deploy writes models.config on the root as well, and the
    server on this machine reads a local copy made from servings.json (it copied a models.config
    that nothing had written, and the deploy failed on every ``s3://`` root)."""
    import httpx

    from jobs.serve import serving
    from tests.integration.serving_server import ServerProcess
    from tests.serving_models import publish_version

    project = create_project("fraud")
    publish_version(project, tmp_path / "m")
    serving.create_or_update("m", 1, project="fraud")
    assert "base_path" in project.fs.read_text("Models/serving/models.config")
    serving.start(project="fraud")
    try:
        serving.wait_available("m", 1, project="fraud", timeout_s=120)
        answer = serving.predict("m", {"instances": [{"x": 1.0, "y": 2.0}]}, project="fraud")
        assert answer["predictions"][0]["sum"] == pytest.approx(3.0)
    finally:
        assert serving.stop(project="fraud")
    # A server elsewhere (docker-compose.yml's model-server) reads the root's own models.config, by URI.
    cluster = ServerProcess(
        f"--model_config_file={project.fs.uri('Models/serving/models.config')}",
        "--completion_marker=_SUCCESS", log=tmp_path / "cluster-server.log",
    )  # fmt: skip
    try:
        cluster.wait_ready("m")
        answer = httpx.post(f"{cluster.url}/v1/models/m:predict", json={"instances": [{"x": 1.0, "y": 2.0}]})
        assert answer.json()["predictions"][0]["sum"] == pytest.approx(3.0)
    finally:
        assert cluster.stop() == 0


def trial(lr):
    (experiment.trial_dir() / "weights.txt").write_text(f"lr={lr}")
    return {"score": 1 - abs(lr - 0.1)}


@pytest.fixture(scope="module")
def mlflow_on_hdfs(hdfs_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An MLflow server whose artifact root is on the HDFS: MLflow 3.17 lets a server reach only the
    HDFS host of its own artifact root (GHSA-mr9f-g8qf-4w4j), as `fjord mlflow start` on an hdfs://
    storage root sets it up."""
    from fjord.config import Settings, StorageSettings

    settings = Settings(
        home=tmp_path_factory.mktemp("mlflow-hdfs"),
        storage=StorageSettings(root=f"{hdfs_server}/mlflow-root"),
    )
    yield from mlflow_at(settings)


def test_experiment_trial_files_reach_mlflow(root: str, request, monkeypatch) -> None:
    server = "mlflow_on_hdfs" if root.startswith("hdfs://") else "mlflow_server"
    tracking = use_mlflow(monkeypatch, request.getfixturevalue(server))
    # A project of its own: MLflow keeps an experiment's artifact location from its first run, and
    # the session's MLflow server has seen "lab" experiments on file:// roots.
    project = create_project(f"lab_{uuid.uuid4().hex[:8]}")
    result = experiment.grid_search(
        trial, {"lr": [0.1, 0.5]}, optimization_key="score", project=project, early_stopping=False
    )
    assert [t.status for t in result.trials] == ["succeeded", "succeeded"]
    mlflow = client(tracking)
    for t in result.trials:
        info = mlflow.get_run(t.mlflow_run_id).info
        assert info.artifact_uri.startswith(root)  # MLflow's artifacts on the same root
        names = [f.path for f in mlflow.list_artifacts(t.mlflow_run_id)]
        assert "weights.txt" in names
        local = mlflow.download_artifacts(t.mlflow_run_id, "weights.txt")
        assert Path(local).read_text() == f"lr={t.params['lr']}"

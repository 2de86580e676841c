"""The cluster profile's settings and topologies, without starting anything (the running cluster is
tests/integration/test_cluster.py's)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fjord import cluster
from fjord.config import ClusterSettings, Settings
from fjord.services import service, service_at, service_names
from fjord.services.hdfs import HdfsService
from fjord.services.kafka import KafkaService
from fjord.services.spark_standalone import SparkStandaloneService


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The home is tmp_path (FJORD_HOME, which outranks a Settings argument)."""
    for name in ("SERVICES__PROFILE", "STORAGE__ROOT", "METADATA__URL", "SPARK__MASTER"):
        monkeypatch.delenv(f"FJORD_{name}", raising=False)
    monkeypatch.setenv("FJORD_HOME", str(tmp_path))


def _settings(home: Path, **services: object) -> Settings:
    return Settings(home=home, services={"profile": "cluster", **services})


def test_the_cluster_profile_names_its_services_and_keeps_them_apart_from_the_embedded_ones(tmp_path) -> None:
    settings = _settings(tmp_path)
    assert service_names(settings) == ("postgres", "redis", "hdfs", "kafka", "spark")
    assert settings.services.up == list(cluster.SERVICE_NAMES)
    assert service("kafka", settings).dir == tmp_path / "cluster" / "services" / "kafka"
    embedded = Settings(home=tmp_path)
    assert service("kafka", embedded).dir == tmp_path / "services" / "kafka"
    assert embedded.services.up == ["kafka"] and "spark" not in service_names(embedded)


def test_unset_settings_wait_for_the_services_and_then_name_them(tmp_path) -> None:
    settings = _settings(tmp_path)
    # Nothing started: not the embedded defaults (a SQLite file, a local directory) in their place.
    assert settings.storage.root is None and settings.metadata.url is None
    assert settings.spark.master == "local[*]" and "master" not in settings.spark.model_fields_set
    for name, ports in {"hdfs": {"rpc": 18020}, "spark": {"master": 17077}}.items():
        state = tmp_path / "cluster" / "services" / name / "state.json"
        state.parent.mkdir(parents=True)
        state.write_text(json.dumps({"ports": ports, "pids": {}}))
    settings = _settings(tmp_path)
    assert settings.storage.root == "hdfs://127.0.0.1:18020/fjord"
    assert settings.spark.master == "spark://127.0.0.1:17077"
    explicit = Settings(home=tmp_path, services={"profile": "cluster"}, storage={"root": "file:///data"},
                        spark={"master": "local[2]"})  # fmt: skip
    assert (explicit.storage.root, explicit.spark.master) == ("file:///data", "local[2]")


def test_the_topologies_follow_the_cluster_settings(tmp_path) -> None:
    sizes = ClusterSettings(spark_workers=3, datanodes=2, kafka_brokers=3)
    hdfs = service_at("hdfs", tmp_path, cluster=sizes)
    assert isinstance(hdfs, HdfsService) and (hdfs.datanodes, hdfs.replication) == (2, 2)
    assert {"datanode", "datanode2", "datanode2_http", "datanode2_ipc"} <= hdfs.role_ports().keys()
    spark = service_at("spark", tmp_path, cluster=sizes)
    assert isinstance(spark, SparkStandaloneService) and spark.workers == 3
    ports = {role: 20000 + i for i, role in enumerate(spark.role_ports())}
    assert [p.label for p in spark.processes(ports)] == ["master", "worker1", "worker2", "worker3"]


def test_three_kafka_nodes_form_one_quorum_and_replicate_three_times(tmp_path) -> None:
    kafka = KafkaService(tmp_path, brokers=3)
    ports = {role: 30000 + i for i, role in enumerate(kafka.role_ports())}
    second = kafka.server_properties(ports, 2)
    assert second["node.id"] == 2
    assert second["controller.quorum.voters"] == ",".join(
        f"{i}@127.0.0.1:{ports['controller' + ('' if i == 1 else str(i))]}" for i in (1, 2, 3)
    )
    assert (second["default.replication.factor"], second["min.insync.replicas"]) == (3, 2)
    assert (second["offsets.topic.replication.factor"], second["transaction.state.log.min.isr"]) == (3, 2)
    assert kafka.address_for(ports).count(",") == 2
    single = KafkaService(tmp_path / "one").server_properties({"broker": 1, "controller": 2})
    assert (single["default.replication.factor"], single["min.insync.replicas"]) == (1, 1)


def test_the_spark_secret_is_in_a_private_file_not_on_a_command_line(tmp_path) -> None:
    spark = SparkStandaloneService(tmp_path, workers=1)
    ports = {role: 40000 + i for i, role in enumerate(spark.role_ports())}
    spark.prepare(ports)
    secret = spark.credentials()["secret"]
    conf = spark.dir / "spark-daemon.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and secret in conf.read_text()
    assert "spark.ui.filters org.apache.spark.ui.JWSFilter" in conf.read_text()
    assert "spark.master.rest.enabled false" in conf.read_text()
    for process in spark.processes(ports):
        assert not any(secret in arg for arg in process.argv) and secret not in json.dumps(process.env)


@pytest.mark.parametrize("datanodes", [1, 2, 5])
def test_spark_writes_hdfs_with_the_replication_the_datanodes_can_hold(tmp_path, datanodes: int) -> None:
    settings = _settings(tmp_path, cluster={"datanodes": datanodes})
    conf = cluster.spark_client_conf(settings, "local[2]")
    assert conf == {"spark.hadoop.dfs.replication": str(min(datanodes, 3))}

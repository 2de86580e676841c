"""docker-compose.yml is the cluster deployment; no Docker engine here, so check its structure."""

from pathlib import Path

import pytest
import yaml

from fjord.config import load_settings
from tests.conftest import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
REQUIRED = {
    "postgres",
    "redis",
    "namenode",
    "datanode",
    "kafka",
    "spark-master",
    "spark-worker",
    "mlflow",
    "tensorflow-serving",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "monitor",
    "monitor-dashboard",
}


def _fjord_env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items() if k.startswith("FJORD_")}


def test_the_whole_stack_is_there() -> None:
    assert set(SERVICES) >= REQUIRED


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_and_a_healthcheck(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), f"{name}: no image or build"
    assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_dependencies_name_real_services(name: str) -> None:
    for dep in SERVICES[name].get("depends_on") or {}:
        assert dep in SERVICES, f"{name} depends on unknown service {dep}"


def test_fjord_services_share_one_configuration_that_fjord_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    fjord_services = {n: s for n, s in SERVICES.items() if s.get("build")}
    assert {"spark-master", "spark-worker", "mlflow", "airflow-worker"} <= set(fjord_services)
    envs = [_fjord_env(s) for s in fjord_services.values()]
    assert all(env == envs[0] for env in envs), "Fjord services disagree on FJORD_* settings"
    for key, value in envs[0].items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # every key is a real setting, every value valid
    assert settings.storage.root == "hdfs://namenode:8020/fjord"
    assert settings.spark.master == "spark://spark-master:7077"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"
    assert settings.metadata.url.startswith("postgresql")
    assert settings.airflow.api_url and settings.redis.url.startswith("redis://redis")


def test_endpoints_point_at_services_of_the_stack() -> None:
    env = _fjord_env(SERVICES["spark-master"])
    hosts = {
        "FJORD_STORAGE__ROOT": "namenode",
        "FJORD_SPARK__MASTER": "spark-master",
        "FJORD_METADATA__URL": "postgres",
        "FJORD_KAFKA__BOOTSTRAP_SERVERS": "kafka",
        "FJORD_MLFLOW__TRACKING_URI": "mlflow",
        "FJORD_REDIS__URL": "redis",
        "FJORD_AIRFLOW__API_URL": "airflow-apiserver",
    }
    for key, host in hosts.items():
        assert host in env[key] and host in SERVICES, key


def test_shared_state_lives_on_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    assert {"hdfs-name", "hdfs-data", "fjord-home"} <= declared
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            assert source in declared or source.startswith(("./", "/")), f"{name}: undeclared volume {source}"
    assert any(v.startswith("fjord-home:") for v in SERVICES["airflow-worker"]["volumes"])


def test_the_image_is_built_from_the_lock() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "uv sync --frozen" in dockerfile and "openjdk-17" in dockerfile
    assert Path(REPO / "uv.lock").is_file()


def _properties_from_env(env: dict, prefix: str) -> dict[str, str]:
    """apache/kafka and apache/hadoop images: KAFKA_LOG_DIRS -> log.dirs, HDFS-SITE.XML_dfs.x -> dfs.x."""
    if prefix == "KAFKA_":
        return {k[6:].lower().replace("_", "."): str(v) for k, v in env.items() if k.startswith(prefix)}
    return {k[len(prefix) :]: str(v) for k, v in env.items() if k.startswith(prefix)}


def test_the_cluster_kafka_is_configured_as_the_embedded_one(tmp_path) -> None:
    from fjord.services.kafka import KafkaService

    embedded = {
        k: str(v) for k, v in KafkaService(tmp_path).server_properties({"broker": 1, "controller": 2}).items()
    }
    cluster = _properties_from_env(SERVICES["kafka"]["environment"], "KAFKA_")
    addresses = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs", "node.id"}
    shared = set(cluster) - addresses
    assert {"process.roles", "offsets.topic.replication.factor", "controller.listener.names"} <= shared
    assert {k: cluster[k] for k in shared} == {k: embedded[k] for k in shared}
    assert SERVICES["kafka"]["image"].endswith(":4.1.1")  # the broker release of fjord/jvm/kafka/pom.xml
    assert "<kafka.version>4.1.1</kafka.version>" in (REPO / "fjord/jvm/kafka/pom.xml").read_text()


def test_the_cluster_hdfs_is_configured_as_the_embedded_one(tmp_path) -> None:
    from fjord.services.hdfs import HdfsService

    ports = {"rpc": 8020, "http": 9870, "datanode": 9866, "datanode_http": 9864, "datanode_ipc": 9867}
    _, embedded = HdfsService(tmp_path).site_properties(ports)
    cluster = _properties_from_env(SERVICES["namenode"]["environment"], "HDFS-SITE.XML_")
    for key in ("dfs.replication", "dfs.permissions.enabled"):
        assert cluster[key] == str(embedded[key]), key
    core = _properties_from_env(SERVICES["namenode"]["environment"], "CORE-SITE.XML_")
    storage_root = _fjord_env(SERVICES["spark-master"])["FJORD_STORAGE__ROOT"]
    assert storage_root.startswith(core["fs.defaultFS"])  # Fjord's root is on that HDFS, at its RPC port
    assert cluster["dfs.namenode.rpc-address"] == core["fs.defaultFS"].removeprefix("hdfs://")


def test_tf_serving_reads_the_model_config_fjord_deploys() -> None:
    command = SERVICES["tensorflow-serving"]["command"]
    assert "--model_config_file=/models/serving/models.config" in command
    assert any(flag.startswith("--model_config_file_poll_wait_seconds=") for flag in command)


def test_every_airflow_process_shares_the_execution_api_url_and_jwt_secret() -> None:
    """The two ways tasks hang in "queued": a worker calling another execution API URL, or signing
    with another JWT secret than the api-server. One anchor gives every Airflow service the same."""
    airflow = {n: s for n, s in SERVICES.items() if n.startswith("airflow-")}
    keys = (
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__DAGS_FOLDER",
    )
    values = {n: tuple(s["environment"].get(k) for k in keys) for n, s in airflow.items()}
    assert len(set(values.values())) == 1 and all(values["airflow-scheduler"]), values
    assert values["airflow-scheduler"][0].startswith("http://airflow-apiserver:8080/")
    env = airflow["airflow-worker"]["environment"]
    assert env["FJORD_AIRFLOW__PASSWORD"] and "PASSWORDS_FILE" in " ".join(airflow["airflow-init"]["command"])

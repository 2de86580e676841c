"""docker-compose.yml is the cluster deployment; no Docker engine here, so check its structure."""

import re
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
    "model-server",
    "hdfs-init",
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
    for key, value in envs[0].items():  # as compose interpolates them from .env
        monkeypatch.setenv(key, re.sub(r"\$\{(\w+):\?[^}]*\}", "s3cret", value))
    settings = load_settings()  # every key is a real setting, every value valid
    assert settings.storage.root == "hdfs://namenode:8020/fjord"
    assert settings.spark.master == "spark://spark-master:7077"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.mlflow.tracking_uri == "http://mlflow:5000"
    assert settings.metadata.url.startswith("postgresql")
    assert settings.airflow.api_url and settings.redis.url == "redis://:s3cret@redis:6379/0"
    assert settings.metadata.url == "postgresql+psycopg://fjord:s3cret@postgres:5432/fjord"


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
    if prefix == "KAFKA_":  # "___" -> "_", "__" -> "-", "_" -> "." (the image's rule)
        return {
            k[6:].lower().replace("___", "\0").replace("__", "-").replace("_", ".").replace("\0", "_"): str(v)
            for k, v in env.items()
            if k.startswith(prefix)
        }
    return {k[len(prefix) :]: str(v) for k, v in env.items() if k.startswith(prefix)}


def test_the_cluster_kafka_is_configured_as_the_embedded_one(tmp_path) -> None:
    from fjord.services.kafka import KafkaService

    embedded = {
        k: str(v) for k, v in KafkaService(tmp_path).server_properties({"broker": 1, "controller": 2}).items()
    }
    cluster = _properties_from_env(SERVICES["kafka"]["environment"], "KAFKA_")
    addresses = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs", "node.id"}
    logins = {k for k in embedded if k.endswith("sasl.jaas.config")}
    shared = set(cluster) - addresses - logins
    assert {"process.roles", "offsets.topic.replication.factor", "controller.listener.names"} <= shared
    assert {"listener.security.protocol.map", "sasl.enabled.mechanisms"} <= shared
    assert {k: cluster[k] for k in shared} == {k: embedded[k] for k in shared}
    # Both listeners take the same SASL/PLAIN login, its password from .env (never in the file).
    assert logins == {k for k in cluster if k.endswith("sasl.jaas.config")}
    for key in logins:
        assert (
            'password="${FJORD_KAFKA_PASSWORD:?' in cluster[key]
            and 'user_fjord="${FJORD_KAFKA_PASSWORD:?' in cluster[key]
        )
    assert all(
        v.replace("://", "").startswith(("SASL_PLAINTEXT", "CONTROLLER"))
        for v in cluster["listeners"].split(",")
    )
    env = _fjord_env(SERVICES["spark-master"])
    assert env["FJORD_KAFKA__SASL_PASSWORD"].startswith("${FJORD_KAFKA_PASSWORD:?")
    assert "--command-config /run/kafka-client.properties" in " ".join(
        SERVICES["kafka"]["healthcheck"]["test"]
    )
    assert SERVICES["kafka"]["image"].endswith(":4.1.1")  # the broker release of fjord/jvm/kafka/pom.xml
    assert "<kafka.version>4.1.1</kafka.version>" in (REPO / "fjord/jvm/kafka/pom.xml").read_text()


def test_the_cluster_hdfs_is_configured_as_the_embedded_one(tmp_path) -> None:
    from fjord.services.hdfs import HdfsService

    ports = {"rpc": 8020, "http": 9870, "datanode": 9866, "datanode_http": 9864, "datanode_ipc": 9867}
    _, embedded = HdfsService(tmp_path).site_properties(ports)
    cluster = _properties_from_env(SERVICES["namenode"]["environment"], "HDFS-SITE.XML_")
    assert cluster["dfs.replication"] == str(embedded["dfs.replication"])
    # permissions on, block tokens on, WebHDFS (a user name from the query string) off, on both
    for key, value in {"dfs.permissions.enabled": "true", "dfs.block.access.token.enable": "true",
                       "dfs.webhdfs.enabled": "false"}.items():  # fmt: skip
        assert embedded[key] == value and cluster[key] == value, key
    assert "hdfs dfs -chown fjord:fjord /fjord" in " ".join(SERVICES["hdfs-init"]["command"])
    assert (
        SERVICES["airflow-init"]["depends_on"]["hdfs-init"]["condition"] == "service_completed_successfully"
    )
    core = _properties_from_env(SERVICES["namenode"]["environment"], "CORE-SITE.XML_")
    storage_root = _fjord_env(SERVICES["spark-master"])["FJORD_STORAGE__ROOT"]
    assert storage_root.startswith(core["fs.defaultFS"])  # Fjord's root is on that HDFS, at its RPC port
    assert cluster["dfs.namenode.rpc-address"] == core["fs.defaultFS"].removeprefix("hdfs://")


def test_the_model_server_reads_the_model_config_fjord_deploys_and_wants_its_token() -> None:
    """docker-compose.yml's model server reads the project's models.config where `fjord model
    deploy` writes it, on the storage root (the server reads URIs: tests/integration/
    test_storage_roots.py), and every call needs the token from .env."""
    command = SERVICES["model-server"]["command"]
    root = _fjord_env(SERVICES["spark-master"])["FJORD_STORAGE__ROOT"]
    assert f"--model_config_file={root}/Projects/fraud/Models/serving/models.config" in command
    assert any(flag.startswith("--model_config_file_poll_wait_seconds=") for flag in command)
    assert (
        "--auth_token_file=/run/secrets/model_token" in command and "--completion_marker=_SUCCESS" in command
    )
    assert SERVICES["model-server"]["secrets"] == ["model_token"]
    assert COMPOSE["secrets"]["model_token"] == {"environment": "FJORD_MODEL_TOKEN"}
    assert "fjord-models" not in COMPOSE["volumes"]  # nothing wrote it; nothing reads it now


TEXT = (REPO / "docker-compose.yml").read_text()
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|FERNET_KEY|SECRET_KEY)$")


def test_no_secret_is_written_in_the_file_each_comes_from_env() -> None:
    """Every password, key and token is ``${NAME:?...}``: compose stops, naming it, while .env lacks it."""
    assert "change-me" not in TEXT and ":fjord@" not in TEXT
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert str(value).startswith("${") and ":?" in str(value), f"{name}: {key}"
    for url in re.findall(r"(?:postgresql[+a-z0-9]*|redis)://[^\s\"']+", TEXT):
        assert "${FJORD_" in url, url  # a password in every URL, from .env


def test_make_compose_env_writes_every_secret_the_file_asks_for(tmp_path) -> None:
    from fjord.compose_env import main

    asked = set(re.findall(r"\$\{(FJORD_[A-Z_]+):\?", TEXT)) | {
        v["environment"] for v in COMPOSE["secrets"].values()
    }
    env = tmp_path / ".env"
    assert main([str(env)]) == 0
    assert env.stat().st_mode & 0o777 == 0o600
    written = dict(line.split("=", 1) for line in env.read_text().splitlines())
    assert asked <= set(written) and written["FJORD_BIND_ADDRESS"] == "127.0.0.1"
    assert all(len(written[name]) >= 24 for name in asked)
    before = env.read_text()
    assert main([str(env)]) == 2 and env.read_text() == before  # never over an existing one
    import base64

    assert len(base64.urlsafe_b64decode(written["FJORD_AIRFLOW_FERNET_KEY"])) == 32


def test_every_published_port_binds_loopback_unless_env_says_otherwise() -> None:
    published = [(name, port) for name, s in SERVICES.items() for port in s.get("ports") or []]
    assert len(published) >= 6
    for name, port in published:
        assert str(port).startswith("${FJORD_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"


def test_mlflow_wants_a_login_and_fjords_clients_have_it() -> None:
    mlflow = SERVICES["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${FJORD_MLFLOW_PASSWORD:?")
    auth = COMPOSE["configs"]["mlflow-auth"]["content"]
    assert "default_permission = NO_PERMISSIONS" in auth and "admin_username = fjord" in auth
    for name, service in SERVICES.items():
        if service.get("build"):
            env = service.get("environment") or {}
            assert env.get("MLFLOW_TRACKING_USERNAME") == "fjord", name
            assert env["MLFLOW_TRACKING_PASSWORD"] == mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"], (
                name
            )


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

"""docker-compose.yml is the cluster deployment; no Docker engine here, so check its structure, and
its parity with the cluster profile (the same topology run here as processes: docs/scaling.md)."""

import itertools
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
    "datanode2",
    "kafka1",
    "kafka2",
    "kafka3",
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
    assert settings.kafka.bootstrap_servers == "kafka1:9092,kafka2:9092,kafka3:9092"
    assert settings.spark.conf["spark.authenticate.secret"] == "s3cret"  # a JSON dict, as compose writes it
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
        "FJORD_MLFLOW__TRACKING_URI": "mlflow",
        "FJORD_REDIS__URL": "redis",
        "FJORD_AIRFLOW__API_URL": "airflow-apiserver",
    }
    for key, host in hosts.items():
        assert host in env[key] and host in SERVICES, key
    brokers = env["FJORD_KAFKA__BOOTSTRAP_SERVERS"].split(",")
    assert brokers == [f"kafka{i}:9092" for i in (1, 2, 3)] and all(
        b.split(":")[0] in SERVICES for b in brokers
    )


def test_shared_state_lives_on_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    assert {"hdfs-name", "hdfs-data", "hdfs-data2", "fjord-home"} <= declared
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


# -- parity with the cluster profile ------------------------------------------------------------------

# Each process of the cluster profile, and the compose service that runs it in a deployment (one service
# with `deploy.replicas: N` stands for N processes of one kind).
PROCESS_SERVICES = {
    ("postgres", "postgres"): "postgres",
    ("redis", "redis"): "redis",
    ("hdfs", "namenode"): "namenode",
    ("hdfs", "datanode"): "datanode",
    ("hdfs", "datanode2"): "datanode2",
    ("kafka", "kafka1"): "kafka1",
    ("kafka", "kafka2"): "kafka2",
    ("kafka", "kafka3"): "kafka3",
    ("spark", "master"): "spark-master",
    ("spark", "worker1"): "spark-worker",
    ("spark", "worker2"): "spark-worker",
}
# Keys naming this host's addresses or directories: compose names containers and volumes instead.
HOST_SPECIFIC = {
    "listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs", "metadata.log.dir",
    "node.id", "dfs.namenode.name.dir", "dfs.datanode.data.dir", "dfs.namenode.http-address",
    "dfs.datanode.address", "dfs.datanode.http.address", "dfs.datanode.ipc.address",
}  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The cluster profile's services at their defaults (nothing started), by name."""
    from fjord.config import reset_settings
    from fjord.services import services

    monkeypatch.setenv("FJORD_HOME", str(tmp_path))
    monkeypatch.setenv("FJORD_SERVICES__PROFILE", "cluster")
    reset_settings()
    try:
        return {svc.name: svc for svc in services()}
    finally:
        monkeypatch.undo()
        reset_settings()


def _replicas(name: str) -> int:
    return int((SERVICES[name].get("deploy") or {}).get("replicas", 1))


def test_compose_runs_every_process_of_the_cluster_profile_and_no_other_of_its_kinds(cluster: dict) -> None:
    from collections import Counter

    from fjord.airflow.stack import CELERY_WORKERS

    processes = [(name, p.label) for name, svc in cluster.items() for p in svc.processes(svc.role_ports())]
    assert set(processes) == set(PROCESS_SERVICES), "a profile process without its compose service"
    wanted = Counter(PROCESS_SERVICES[p] for p in processes)
    assert {name: _replicas(name) for name in wanted} == dict(wanted)
    # no fourth broker or third DataNode in compose that the profile does not run
    kinds = ("kafka", "datanode", "spark-worker")
    assert {n for n in SERVICES if n.startswith(kinds)} == {n for n in wanted if n.startswith(kinds)}
    assert _replicas("airflow-worker") == CELERY_WORKERS == 2


def test_the_kafka_nodes_have_the_profiles_configuration_node_by_node(cluster: dict) -> None:
    kafka = cluster["kafka"]
    ports = kafka.role_ports()
    for node in (1, 2, 3):
        profile = {k: str(v) for k, v in kafka.server_properties(ports, node).items()}
        compose = _properties_from_env(SERVICES[f"kafka{node}"]["environment"], "KAFKA_")
        logins = {k for k in profile if k.endswith("sasl.jaas.config")}
        assert set(compose) == set(profile) - {"metadata.log.dir"}, f"kafka{node}: other keys"
        same = set(profile) - HOST_SPECIFIC - logins
        assert {k: compose[k] for k in same} == {k: profile[k] for k in same}, f"kafka{node}"
        assert compose["node.id"] == profile["node.id"] == str(node)
        assert compose["advertised.listeners"] == f"SASL_PLAINTEXT://kafka{node}:9092"
        for key in logins:  # the same SASL/PLAIN login, its password from .env (never in the file)
            assert 'password="${FJORD_KAFKA_PASSWORD:?' in compose[key]
            assert 'user_fjord="${FJORD_KAFKA_PASSWORD:?' in compose[key]
    # replicated 3 times, 2 in sync: one node may go without losing an acks=all write
    assert (profile["default.replication.factor"], profile["min.insync.replicas"]) == ("3", "2")
    # one quorum of the same node ids, on the controller port
    voters = compose["controller.quorum.voters"].split(",")
    assert voters == [f"{i}@kafka{i}:{ports['controller']}" for i in (1, 2, 3)]
    assert [v.split("@")[0] for v in profile["controller.quorum.voters"].split(",")] == ["1", "2", "3"]
    assert len({SERVICES[f"kafka{i}"]["environment"]["CLUSTER_ID"] for i in (1, 2, 3)}) == 1
    assert len({SERVICES[f"kafka{i}"]["volumes"][0].split(":")[0] for i in (1, 2, 3)}) == 3  # own logs each
    env = _fjord_env(SERVICES["spark-master"])
    assert env["FJORD_KAFKA__SASL_PASSWORD"].startswith("${FJORD_KAFKA_PASSWORD:?")
    assert SERVICES["kafka1"]["image"].endswith(":4.1.1")  # the broker release of fjord/jvm/kafka/pom.xml
    assert "<kafka.version>4.1.1</kafka.version>" in (REPO / "fjord/jvm/kafka/pom.xml").read_text()


def test_hdfs_has_the_profiles_configuration_and_replication(cluster: dict) -> None:
    from fjord.cluster import replication
    from fjord.config import ClusterSettings

    hdfs = cluster["hdfs"]
    _core_profile, profile = hdfs.site_properties(hdfs.role_ports())
    compose = _properties_from_env(SERVICES["namenode"]["environment"], "HDFS-SITE.XML_")
    same = set(profile) - HOST_SPECIFIC
    assert {k: compose[k] for k in same} == {k: str(profile[k]) for k in same}
    assert compose["dfs.replication"] == str(replication(ClusterSettings())) == "2"
    assert compose["dfs.permissions.enabled"] == "true" and compose["dfs.webhdfs.enabled"] == "false"
    datanodes = [n for n in SERVICES if n.startswith("datanode")]
    assert all(SERVICES[n]["environment"] == SERVICES["namenode"]["environment"] for n in datanodes)
    assert len({SERVICES[n]["volumes"][0].split(":")[0] for n in datanodes}) == len(datanodes)  # own blocks
    # Spark's Hadoop client writes with the same replication (its own default, 3, cannot be held)
    conf = _spark_client_conf()
    assert conf["spark.hadoop.dfs.replication"] == compose["dfs.replication"]
    core = _properties_from_env(SERVICES["namenode"]["environment"], "CORE-SITE.XML_")
    storage_root = _fjord_env(SERVICES["spark-master"])["FJORD_STORAGE__ROOT"]
    assert storage_root.startswith(core["fs.defaultFS"])  # Fjord's root is on that HDFS, at its RPC port
    assert cluster["hdfs"].role_ports()["rpc"] == int(core["fs.defaultFS"].rsplit(":", 1)[1])
    assert compose["dfs.namenode.rpc-address"] == core["fs.defaultFS"].removeprefix("hdfs://")
    assert "hdfs dfs -chown fjord:fjord /fjord" in " ".join(SERVICES["hdfs-init"]["command"])
    assert set(SERVICES["hdfs-init"]["depends_on"]) == {"datanode", "datanode2"}
    assert (
        SERVICES["airflow-init"]["depends_on"]["hdfs-init"]["condition"] == "service_completed_successfully"
    )


def _spark_client_conf() -> dict[str, str]:
    import json

    return json.loads(_fjord_env(SERVICES["spark-master"])["FJORD_SPARK__CONF"])


def _argv_options(argv: list[str]) -> dict[str, str]:
    return {a: b for a, b in itertools.pairwise(argv) if a.startswith("--")}


def test_spark_runs_as_the_profile_runs_it_secret_off_the_command_line(cluster: dict) -> None:
    spark = cluster["spark"]
    ports = spark.role_ports()
    spark.prepare(ports)  # writes its properties file (and this home's secret) under tmp_path
    profile = dict(
        line.split(" ", 1) for line in (spark.dir / "spark-daemon.conf").read_text().splitlines() if line
    )
    compose = dict(
        line.split(" ", 1) for line in COMPOSE["configs"]["spark-daemon"]["content"].splitlines() if line
    )
    assert set(compose) == set(profile)
    secrets = {"spark.authenticate.secret", "spark.org.apache.spark.ui.JWSFilter.param.secretKey"}
    assert {k: compose[k] for k in set(profile) - secrets} == {k: profile[k] for k in set(profile) - secrets}
    assert compose["spark.authenticate.secret"] == "${FJORD_SPARK_SECRET:?run make compose-env}"
    assert compose["spark.master.rest.enabled"] == "false"  # no unauthenticated submissions
    launched = {p.label: _argv_options(p.argv) for p in spark.processes(ports)}
    for label, name in (("master", "spark-master"), ("worker1", "spark-worker")):
        command = SERVICES[name]["command"]
        options = _argv_options(command)
        assert (
            options["--properties-file"] == SERVICES[name]["configs"][0]["target"] == "/run/spark-daemon.conf"
        )
        assert set(options) == set(launched[label]) - {"--host", "--work-dir"} | (
            {"--host"} if label == "master" else set()
        )
        for flag in ("--port", "--webui-port", "--cores", "--memory"):  # the same ports and sizes
            assert options.get(flag) == launched[label].get(flag), f"{name} {flag}"
        assert not any("secret" in arg.lower() for arg in command)
    assert SERVICES["spark-master"]["configs"][0]["mode"] == 0o400
    # applications: the same secret, from .env, with spark.authenticate on
    conf = _spark_client_conf()
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.authenticate.secret"] == compose["spark.authenticate.secret"]
    master = _fjord_env(SERVICES["spark-master"])["FJORD_SPARK__MASTER"]
    assert master == f"spark://spark-master:{ports['master']}"


def test_the_other_ports_are_the_profiles(cluster: dict) -> None:
    env = _fjord_env(SERVICES["spark-master"])
    assert f"@postgres:{cluster['postgres'].role_ports()['sql']}/" in env["FJORD_METADATA__URL"]
    assert f"@redis:{cluster['redis'].role_ports()['redis']}/" in env["FJORD_REDIS__URL"]
    hdfs = cluster["hdfs"].role_ports()
    assert f"localhost:{hdfs['http']}" in " ".join(SERVICES["namenode"]["healthcheck"]["test"])
    assert f"localhost:{hdfs['datanode_http']}" in " ".join(SERVICES["datanode"]["healthcheck"]["test"])
    kafka = cluster["kafka"].role_ports()
    listeners = _properties_from_env(SERVICES["kafka1"]["environment"], "KAFKA_")["listeners"]
    assert listeners == f"SASL_PLAINTEXT://:{kafka['broker']},CONTROLLER://:{kafka['controller']}"


def test_airflow_runs_on_celery_as_the_profile() -> None:
    from fjord.airflow.stack import CELERY_WORKERS, TASK_HEARTBEAT_TIMEOUT_S

    env = SERVICES["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    broker = env["AIRFLOW__CELERY__BROKER_URL"]
    assert broker.startswith("redis://") and broker.endswith("@redis:6379/1")  # database 1: the store has 0
    # a dead worker's task is retried elsewhere after the same time as on the profile
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == str(TASK_HEARTBEAT_TIMEOUT_S)
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert (
        int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"])
        == int(env["AIRFLOW__CORE__PARALLELISM"]) // CELERY_WORKERS
    )


def test_mlflow_keeps_runs_in_postgresql_and_artifacts_on_hdfs_with_no_password_in_its_command() -> None:
    mlflow = SERVICES["mlflow"]
    root = _fjord_env(SERVICES["spark-master"])["FJORD_STORAGE__ROOT"]
    assert f"--default-artifact-root={root}/MLflow" in mlflow["command"]  # the profile's: <root>/MLflow
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert "@postgres:5432/mlflow" in mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert not any("postgres" in arg or "PASSWORD" in arg for arg in mlflow["command"])


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

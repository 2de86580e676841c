from pathlib import Path

import pytest

from fjord.config import ConfigError, get_settings, load_settings


def test_defaults_are_the_embedded_stack(fjord_home: Path) -> None:
    s = load_settings()
    assert s.home == fjord_home.resolve()
    assert s.storage.root == (fjord_home / "fs").resolve().as_uri()
    assert s.spark.master == "local[*]"
    assert s.metadata.url == f"sqlite:///{fjord_home.resolve() / 'fjord.db'}"
    assert s.kafka.bootstrap_servers is None  # None means: the embedded broker
    assert s.mlflow.tracking_uri is None


def test_yaml_file_then_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fjord.yaml").write_text(
        "spark:\n  master: spark://yaml:7077\n  shuffle_partitions: 8\nkafka:\n  bootstrap_servers: k:9092\n"
    )
    monkeypatch.setenv("FJORD_SPARK__MASTER", "spark://env:7077")
    s = load_settings()  # ./fjord.yaml is found in the working directory
    assert s.spark.master == "spark://env:7077"
    assert s.spark.shuffle_partitions == 8
    assert s.kafka.bootstrap_servers == "k:9092"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("FJORD_STORAGE__ROOT", "hdfs://namenode:8020/fjord"),
        ("FJORD_SPARK__MASTER", "spark://master:7077"),
        ("FJORD_KAFKA__BOOTSTRAP_SERVERS", "kafka:9092"),
        ("FJORD_MLFLOW__TRACKING_URI", "http://mlflow:5000"),
        ("FJORD_REDIS__URL", "redis://redis:6379/1"),
        ("FJORD_AIRFLOW__API_URL", "http://airflow:8080"),
        ("FJORD_METADATA__URL", "postgresql+psycopg://fjord@postgres/fjord"),
    ],
)
def test_every_endpoint_is_one_setting_away(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
) -> None:
    monkeypatch.setenv(setting, value)
    section, key = setting.removeprefix("FJORD_").lower().split("__")
    assert getattr(getattr(load_settings(), section), key) == value


def test_unknown_key_in_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text("spark:\n  mastr: local[2]\n")
    with pytest.raises(ConfigError, match=r"conf\.yaml: unknown setting 'spark\.mastr'"):
        load_settings(path)


def test_unknown_top_level_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.write_text("sprak: {}\n")
    with pytest.raises(ConfigError, match="unknown setting 'sprak'"):
        load_settings(path)


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FJORD_SPARK__SHUFFLE_PARTITIONS", "many")
    with pytest.raises(
        ConfigError, match=r"FJORD_SPARK__SHUFFLE_PARTITIONS: bad value for 'spark\.shuffle_partitions'"
    ):
        load_settings()


@pytest.mark.parametrize("name", ["FJORD_SPARK_MASTER", "FJORD_BOGUS", "FJORD_SPARK__MASTR"])
def test_unknown_variable_is_an_error(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(ConfigError, match=f"environment variable {name}"):
        load_settings()


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fjord.yaml"
    path.write_text("spark:\n  master: [unclosed\n")
    with pytest.raises(ConfigError, match=r"fjord\.yaml: line \d+ malformed YAML"):
        load_settings(path)


def test_non_mapping_yaml(tmp_path: Path) -> None:
    path = tmp_path / "fjord.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(path)


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FJORD_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"FJORD_CONFIG names .*nope\.yaml, which is not a file"):
        load_settings()
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "also-nope.yaml")


def test_get_settings_is_cached() -> None:
    assert get_settings() is get_settings()


@pytest.mark.parametrize("master", ["lcoal[*]", "spark://no-port", "local[x]", "mesos://h:5050"])
def test_a_bad_spark_master_is_refused_up_front(monkeypatch: pytest.MonkeyPatch, master: str) -> None:
    monkeypatch.setenv("FJORD_SPARK__MASTER", master)
    with pytest.raises(ConfigError, match="is not a Spark master URL"):
        load_settings()


@pytest.mark.parametrize("master", ["local", "local[*]", "local[2,3]", "local-cluster[2,1,1024]", "yarn",
                                    "spark://a:7077,b:7077", "k8s://https://k8s.example:6443"])  # fmt: skip
def test_spark_master_forms(monkeypatch: pytest.MonkeyPatch, master: str) -> None:
    monkeypatch.setenv("FJORD_SPARK__MASTER", master)
    assert load_settings().spark.master == master


def test_a_new_home_is_readable_by_its_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback is shared by every user of a machine: a home Fjord makes (its registry, secrets,
    logs and, by default, the shared filesystem) is mode 700."""
    import stat

    from fjord.config import get_settings, reset_settings

    home = tmp_path / "new" / "home"
    monkeypatch.setenv("FJORD_HOME", str(home))
    reset_settings()
    assert get_settings().home == home and stat.S_IMODE(home.stat().st_mode) == 0o700

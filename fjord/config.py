"""Fjord's settings: one typed object, read from ``FJORD_*`` variables and an optional ``fjord.yaml``.

Precedence, highest first: environment variables, the YAML file, the defaults. Nested settings use
``__`` in variable names (``FJORD_SPARK__MASTER=spark://host:7077``) and sections in YAML::

    spark:
      master: spark://host:7077
    storage:
      root: hdfs://namenode:8020/fjord

The defaults are the embedded stack: the local filesystem under ``$FJORD_HOME`` (``~/.fjord``),
Spark ``local[*]``, SQLite metadata, an embedded Kafka-protocol broker and an embedded MLflow server.
Every external endpoint is one setting away. Unknown keys are errors that name the file or the
variable they came from.

>>> from fjord.config import get_settings
>>> get_settings().spark.master
'local[*]'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from fjord.errors import ConfigError
from fjord.plugins import PluginConfig

ENV_PREFIX = "FJORD_"
CONFIG_FILE_ENV = "FJORD_CONFIG"
# Not a setting: where a stage job writes its result for the orchestrator's hook (fjord/jobmain.py).
RESULT_FILE_ENV = "FJORD_RESULT_FILE"
DEFAULT_CONFIG_FILE = "fjord.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageSettings(_Section):
    """The shared filesystem every stage reads and writes."""

    root: str | None = Field(
        default=None,
        description="Root URI of the shared filesystem: file:///path, hdfs://host:port/path or "
        "s3://bucket/prefix. Default: file://$FJORD_HOME/fs.",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO).")
    s3_key: str | None = None
    s3_secret: str | None = None
    hdfs_user: str | None = None

    def as_environment(self) -> dict[str, str]:
        """These settings as ``FJORD_STORAGE__*`` variables, for a process that must see the same
        storage (a trial on an executor that was started before, or far from, the driver's settings)."""
        values = self.model_dump(mode="json", exclude_none=True)
        return {f"{ENV_PREFIX}STORAGE__{name.upper()}": str(value) for name, value in values.items()}


_SPARK_MASTER = re.compile(
    r"local|local\[(\d+|\*)\]|local\[(\d+|\*),\d+\]|local-cluster\[\d+,\d+,\d+\]"
    r"|spark://[\w.-]+:\d+(,[\w.-]+:\d+)*|yarn|k8s://(https?://)?[\w.-]+(:\d+)?"
)


class SparkSettings(_Section):
    """How :func:`fjord.spark.get_spark` builds the one SparkSession of a process."""

    master: str = Field(
        default="local[*]", description="local[*], spark://, yarn, k8s://, local-cluster[...]"
    )
    driver_memory: str = "2g"
    executor_memory: str = "1g"
    # 2 cores: Spark's default of 200 shuffle partitions is 200 tiny tasks per shuffle.
    shuffle_partitions: int = Field(default=4, ge=1)
    event_log: bool = True
    conf: dict[str, str] = Field(default_factory=dict, description="Extra spark.* settings.")

    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        # Spark's own master URL forms (SparkContext.createTaskScheduler): caught here, not later
        # inside a Java stack trace.
        if not _SPARK_MASTER.fullmatch(value.strip()):
            raise ValueError(
                f"{value!r} is not a Spark master URL: local, local[N|*], local[N,F], "
                "local-cluster[N,C,M], spark://host:port[,host:port], yarn or k8s://https://host:port"
            )
        return value.strip()


class MetadataSettings(_Section):
    """The SQL database holding Fjord's metadata (lineage index; later the feature registry)."""

    url: str | None = Field(default=None, description="SQLAlchemy URL. Default: SQLite under $FJORD_HOME.")


class KafkaSettings(_Section):
    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]. Default: the embedded Kafka-protocol broker."
    )
    sasl_username: str | None = Field(
        default=None,
        description="A configured cluster's SASL/PLAIN login (SASL_PLAINTEXT). The embedded broker's is "
        "generated per home and used without a setting.",
    )
    sasl_password: str | None = Field(default=None, description="The password of sasl_username.")


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(default=None, description="Default: the embedded MLflow server.")


class RedisSettings(_Section):
    url: str | None = Field(default=None, description="redis://host:port/db. Default: the embedded server.")


class JvmSettings(_Section):
    """Where the JVM jars are (:mod:`fjord.jvm`)."""

    jars_dir: Path | None = Field(
        default=None, description="Default: .jvm in the checkout (make fetches it)."
    )


class ClusterSettings(_Section):
    """The cluster profile's topology (``services.profile: cluster``; docs/scaling.md)."""

    spark_workers: int = Field(default=2, ge=1, description="Spark standalone workers.")
    worker_cores: int = Field(default=1, ge=1, description="Cores each Spark worker offers.")
    worker_memory: str = Field(default="2g", description="Memory each Spark worker offers its executors.")
    datanodes: int = Field(default=2, ge=1, description="HDFS DataNodes; replication is min(datanodes, 3).")
    kafka_brokers: int = Field(default=3, ge=1, description="Kafka nodes, each broker and controller.")


class ServicesSettings(_Section):
    """The embedded stack (:mod:`fjord.services`): servers started on loopback when a setting is unset."""

    profile: Literal["embedded", "cluster"] = Field(
        default="embedded",
        description="embedded: one process per server; cluster: multi-process topologies "
        "(Spark standalone, HDFS DataNodes, Kafka brokers), state in $FJORD_HOME/cluster/.",
    )
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    preferred_ports: bool = Field(
        default=True,
        description="Take the well-known ports (5432, 6379, 9092, 8020, 8333) when free; else any free port.",
    )
    up: list[str] = Field(
        default_factory=lambda: ["kafka"],
        description="The embedded services `fjord up` starts (postgres, redis, s3, hdfs, kafka). "
        "Default: kafka; in the cluster profile, all of them but s3, and spark.",
    )


class JobWorkerSettings(_Section):
    """The warm job worker the embedded Airflow's tasks run their jobs in (fjord/jobworker.py)."""

    enabled: bool = Field(
        default=True,
        description="fjord up starts it; off, every task starts its job as a process of its own.",
    )
    max_jobs: int = Field(default=100, ge=1, description="Jobs before it starts afresh.")
    max_memory_mb: int = Field(
        default=6_144, ge=512, description="Its memory (with its JVM) above which it starts afresh."
    )
    wait_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How long a task waits for a busy worker before starting its job as its own process.",
    )


class AirflowSettings(_Section):
    """Airflow: the embedded one (``fjord up``) unless ``api_url`` names a running one."""

    api_url: str | None = Field(default=None, description="Airflow REST API. Default: the embedded one.")
    username: str = Field(default="admin", description="The user the platform's own calls log in as.")
    password: str | None = Field(default=None, description="Default: the embedded Airflow's, from its home.")
    parallelism: int = Field(default=4, ge=1, description="Task slots of the embedded Airflow.")
    task_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="fjord run: a task running longer than this is stuck; the run is failed, naming the task "
        "and its log (the demo's longest task takes about 3 minutes on 2 cores).",
    )
    dags_folder: Path | None = Field(default=None, description="Default: dags/ in the checkout.")
    job_worker: JobWorkerSettings = Field(default_factory=JobWorkerSettings)


class MonitorSettings(_Section):
    """The streaming monitors ``fjord up`` starts (one per served model) and their dashboard."""

    enabled: bool = Field(default=True, description="fjord up starts a monitor per served model.")
    window_seconds: int = Field(default=30, ge=1, description="Tumbling event-time windows.")
    lateness_seconds: int = Field(default=5, ge=0, description="How late a log record may arrive.")
    trigger_seconds: float = Field(default=5.0, gt=0, description="Micro-batch interval.")
    cooldown_seconds: int = Field(default=3_600, ge=0, description="Between two retraining alerts.")
    restart_backoff_seconds: float = Field(
        default=2.0, gt=0, le=300, description="Wait before restarting a monitor that exited (doubles)."
    )
    dashboard_port: int = Field(default=8050, ge=1, le=65_535, description="Preferred dashboard port.")
    cluster_cores: int = Field(
        default=1, ge=1, description="Cores a monitor holds on a Spark cluster (spark.cores.max): a "
        "streaming query keeps its executors for its whole life, and batch jobs need the rest.",
    )  # fmt: skip


class SQLiteOnlineStoreConfig(PluginConfig):
    """The embedded online store: one SQLite file."""

    type: Literal["sqlite"] = "sqlite"
    path: Path | None = Field(default=None, description="Default: $FJORD_HOME/online.db.")


class RedisOnlineStoreConfig(PluginConfig):
    """Redis (or Valkey): pipelined reads, for many readers."""

    type: Literal["redis"] = "redis"
    url: str | None = Field(default=None, description="Default: redis.url, else the embedded server.")


class DuckDBJoinEngineConfig(PluginConfig):
    """Point-in-time joins on one machine (DuckDB's ASOF JOIN), within ``duckdb_memory_limit``."""

    type: Literal["duckdb"] = "duckdb"


class SparkJoinEngineConfig(PluginConfig):
    """Point-in-time joins on the Spark session, for data that outgrows one machine."""

    type: Literal["spark"] = "spark"


OnlineStoreConfig = Annotated[SQLiteOnlineStoreConfig | RedisOnlineStoreConfig, Field(discriminator="type")]
JoinEngineConfig = Annotated[DuckDBJoinEngineConfig | SparkJoinEngineConfig, Field(discriminator="type")]


def _plugin(default: str) -> Any:
    """A plug-in setting given as its type alone (``online_store: redis``, or the variable
    ``FJORD_FEATURESTORE__ONLINE_STORE=redis``), or as options without a type: the default's."""

    def coerce(value: Any) -> Any:
        if isinstance(value, str):
            return {"type": value}
        if isinstance(value, Mapping) and "type" not in value:
            return {"type": default, **value}
        return value

    return coerce


class FeatureStoreSettings(_Section):
    """The feature store (``featurestore``): its join engine and online store, each a plug-in with
    a ``type`` and its own options (:mod:`fjord.plugins`)."""

    join_engine: JoinEngineConfig = Field(
        default_factory=DuckDBJoinEngineConfig,
        description="type duckdb: one machine (ASOF JOIN); type spark: data that outgrows it.",
    )
    online_store: OnlineStoreConfig = Field(
        default_factory=SQLiteOnlineStoreConfig,
        description="type sqlite (path): embedded; type redis (url, default redis.url): pipelined reads.",
    )
    _join_engine_type = field_validator("join_engine", mode="before")(_plugin("duckdb"))
    _online_store_type = field_validator("online_store", mode="before")(_plugin("sqlite"))
    duckdb_memory_limit: str = Field(
        default="2GB",
        description="DuckDB's memory cap in joins and inserts; past it DuckDB spills.",
    )
    writer_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A writer's lease on a feature group lapses this long after its last renewal.",
    )
    writer_wait_seconds: float = Field(
        default=600.0, ge=0, description="How long a second writer of a feature group waits for the lease."
    )


class EnvironmentSettings(_Section):
    """Per-project Python environments (:mod:`fjord.envs`)."""

    builder: Literal["auto", "uv", "conda"] = Field(
        default="auto", description="auto: conda/micromamba when on PATH, else uv."
    )
    cache_dir: Path | None = Field(
        default=None, description="Local directory the environments are built in. Default: $FJORD_HOME/envs."
    )
    index_url: str | None = Field(default=None, description="Package index for project packages.")


class Settings(BaseSettings):
    """All of Fjord's settings. Build it with :func:`load_settings`; read it with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(default=Path("~/.fjord"), description="Where the embedded stack keeps its state.")
    project: str | None = Field(default=None, description="The project API calls use when given none.")
    storage: StorageSettings = Field(default_factory=StorageSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    metadata: MetadataSettings = Field(default_factory=MetadataSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    airflow: AirflowSettings = Field(default_factory=AirflowSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    environments: EnvironmentSettings = Field(default_factory=EnvironmentSettings)
    featurestore: FeatureStoreSettings = Field(default_factory=FeatureStoreSettings)
    services: ServicesSettings = Field(default_factory=ServicesSettings)
    jvm: JvmSettings = Field(default_factory=JvmSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file's values arrive as init arguments; environment variables override them.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if self.services.profile == "cluster":
            from fjord.cluster import fill_defaults

            fill_defaults(self)
        embedded = self.services.profile == "embedded"  # the cluster's: started when first needed
        if self.storage.root is None and embedded:
            self.storage.root = (self.home / "fs").as_uri()
        if self.metadata.url is None and embedded:
            self.metadata.url = f"sqlite:///{self.home / 'fjord.db'}"
        if self.environments.cache_dir is None:
            self.environments.cache_dir = self.home / "envs"
        online = self.featurestore.online_store
        if isinstance(online, SQLiteOnlineStoreConfig) and online.path is None:
            self.featurestore.online_store = online.model_copy(update={"path": self.home / "online.db"})
        return self


def find_config_file() -> Path | None:
    """The YAML file to read: ``$FJORD_CONFIG`` (which must exist) or ``./fjord.yaml`` if present."""
    named = os.environ.get(CONFIG_FILE_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV} names {path}, which is not a file")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}:{where} malformed YAML: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top, got {type(data).__name__}")
    return data


def _reject_unknown_variables(environ: Mapping[str, str]) -> None:
    # pydantic-settings ignores unknown top-level FJORD_* variables; a typo there must not pass silently.
    known = {name.upper() for name in Settings.model_fields} | {
        name[len(ENV_PREFIX) :] for name in (CONFIG_FILE_ENV, RESULT_FILE_ENV)
    }
    known.add("CRASH_AT")  # not a setting: fjord.faults' test hook
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX):
            head = name[len(ENV_PREFIX) :].split("__", 1)[0]
            if head not in known:
                raise ConfigError(
                    f"environment variable {name}: unknown setting '{head.lower()}'",
                    hint=f"known settings: {', '.join(sorted(Settings.model_fields))}",
                )


def _describe(error: ErrorDetails, file_values: dict[str, Any], path: Path | None) -> str:
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc)
    node: Any = file_values
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else None
    from_file = node is not None and path is not None
    origin = str(path) if from_file else f"environment variable {ENV_PREFIX}{'__'.join(loc).upper()}"
    if error["type"] == "extra_forbidden":
        return f"{origin}: unknown setting '{dotted}'"
    return f"{origin}: bad value for '{dotted}': {error['msg']}"


def load_settings(config_file: Path | str | None = None) -> Settings:
    """Read the settings from ``config_file`` (or :func:`find_config_file`) and ``FJORD_*`` variables.

    Raises :class:`ConfigError` naming the file or the variable and the bad key.
    """
    path = Path(config_file) if config_file is not None else find_config_file()
    if path is not None and not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    file_values = _read_yaml(path) if path is not None else {}
    _reject_unknown_variables(os.environ)
    try:
        return Settings(**file_values)
    except SettingsError as exc:  # a variable pydantic-settings cannot even parse (JSON of a dict)
        field = re.search(r'field "(\w+)"', str(exc))
        names = sorted(n for n in os.environ if field and n.upper().startswith(f"FJORD_{field[1].upper()}__"))
        raise ConfigError(
            f"{', '.join(names) or 'a FJORD_* variable'}: cannot be parsed "
            f"({str(exc).split(' from source')[0]})",
            hint='a dict setting is JSON: FJORD_SPARK__CONF=\'{"spark.x": "y"}\'',
        ) from None
    except ValidationError as exc:
        problems = [_describe(e, file_values, path) for e in exc.errors()]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more) from None


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process's settings, loaded once."""
    global _settings
    if _settings is None:
        _settings = load_settings()
        if not _settings.home.exists():  # made private: other local users get none of its state
            _settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _settings


def reset_settings() -> None:
    """Forget the loaded settings, so the next :func:`get_settings` reads them again (tests, CLI)."""
    global _settings
    _settings = None

"""The one place a SparkSession is built.

:func:`get_spark` reads :class:`fjord.config.SparkSettings`, so the same code runs on ``local[*]``
(the default), ``local-cluster[...]``, ``spark://``, ``yarn`` or ``k8s://``. Given a project it
writes event logs under the project's ``Logs/spark-events`` and runs Python on the executors in the
project's environment: in place on a ``local`` master, shipped as a venv-pack archive
(``spark.archives=...#environment``) on any other. One session is reused per process; asking for a
different master or environment stops it and builds the right one.

>>> spark = get_spark(get_project("fraud"))           # doctest: +SKIP
>>> spark.read.parquet(project.fs.spark_uri("Resources/landing/2026-11-23"))  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fjord.config import Settings, get_settings
from fjord.errors import ServiceError, SparkError
from fjord.fs import SharedFS, shared_root
from fjord.jvm import jars, java_executable
from fjord.private import write_private

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from fjord.projects import Project

log = logging.getLogger(__name__)

SHIPPED_ENV_NAME = "environment"
_LOG4J_CONFIG = Path(__file__).parent / "resources" / "log4j2.properties"
_session: SparkSession | None = None
_session_key: tuple[str, ...] | None = None
_job_group: str | None = None


def is_local_master(master: str) -> bool:
    """True for ``local``/``local[N]``: executors are threads of the driver's host and share its disk."""
    return master == "local" or master.startswith("local[")


def check_java() -> str:
    """The java executable Spark will use; :class:`SparkError` if there is none."""
    java = java_executable()
    if java is None:
        raise SparkError(
            "Java is not installed (Spark needs Java 17)",
            hint="install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME",
        )
    return java


def spark_conf(settings: Settings, project: Project | None) -> tuple[dict[str, str], str]:
    """The Spark configuration for ``project`` and the Python executable executors must run."""
    spark = settings.spark
    if settings.services.profile == "cluster" and "master" not in spark.model_fields_set:
        from fjord.cluster import spark_master

        spark = spark.model_copy(update={"master": spark_master(settings)})
    conf = {
        "spark.master": spark.master,
        "spark.driver.memory": spark.driver_memory,
        "spark.executor.memory": spark.executor_memory,
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.default.parallelism": str(spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Not legacy INT96: pyarrow, DuckDB and delta-rs read these as timestamp[us, UTC], as Fjord writes.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }
    log4j = f"-Dlog4j2.configurationFile={_LOG4J_CONFIG.as_uri()}"
    conf["spark.driver.extraJavaOptions"] = log4j
    conf["spark.executor.extraJavaOptions"] = log4j
    if spark.master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    # The driver's web UI (4040 and up: its jobs, and the status API) asks for a signed token, as the
    # standalone daemons' do: a request needs Authorization: Bearer <ui_token()>, else 403.
    conf["spark.ui.filters"] = "org.apache.spark.ui.JWSFilter"
    conf[_UI_KEY] = ui_key(settings)
    conf.update(_storage_conf(settings))
    if settings.services.profile == "cluster":
        from fjord.cluster import spark_client_conf

        conf.update(spark_client_conf(settings, spark.master))
    conf["spark.jars"] = ",".join(str(jar) for jar in _spark_jars(settings))
    logs = (project.fs if project else shared_root()).sub("Logs")
    if spark.event_log:
        conf.update(_event_log_conf(logs))
    python = sys.executable
    if project is not None:
        python = _project_python(project, spark.master, conf)
    conf.update(spark.conf)
    return conf, python


def ui_key(settings: Settings) -> str:
    """The key (256 bits, url-safe base64) Spark's ``JWSFilter`` checks the driver UIs' tokens
    with: made once per home, ``$FJORD_HOME/spark/ui.key`` (mode 600). Of two processes making it
    at once, the first one's is kept."""
    path = settings.home / "spark" / "ui.key"
    if not path.exists():
        tmp = path.with_name(f".ui.key.{os.getpid()}.{threading.get_ident()}")
        write_private(tmp, base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()


_UI_KEY = "spark.org.apache.spark.ui.JWSFilter.param.secretKey"


def ui_token(session: SparkSession | None = None) -> str:
    """A bearer token the Spark driver UIs accept (``Authorization: Bearer <token>``): those of this
    home, or the one of ``session`` (whichever home made it)."""
    import jwt

    key = session.sparkContext.getConf().get(_UI_KEY) if session is not None else None
    secret = base64.urlsafe_b64decode(key or ui_key(get_settings()))
    return jwt.encode({"sub": "fjord"}, secret, algorithm="HS256")


def _event_log_conf(logs: SharedFS) -> dict[str, str]:
    logs.makedirs("spark-events")
    return {"spark.eventLog.enabled": "true", "spark.eventLog.dir": logs.spark_uri("spark-events")}


def _spark_jars(settings: Settings) -> list[Path]:
    # Spark's Kafka source and Hadoop's S3A, fetched by make (fjord/jvm/spark/pom.xml). On a cluster
    # without local copies, spark.conf's spark.jars.packages resolves the same coordinates instead.
    try:
        return jars("spark", settings)
    except ServiceError as exc:
        raise SparkError(str(exc), hint=exc.hint) from None


def _storage_conf(settings: Settings) -> dict[str, str]:
    storage = settings.storage
    conf = {}
    if storage.s3_endpoint_url:
        conf["spark.hadoop.fs.s3a.endpoint"] = storage.s3_endpoint_url
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
        # An S3-compatible server (SeaweedFS, MinIO) has one region; naming it skips S3A's region probe.
        conf["spark.hadoop.fs.s3a.endpoint.region"] = "us-east-1"
    if storage.s3_key:
        conf["spark.hadoop.fs.s3a.access.key"] = storage.s3_key
    if storage.s3_secret:
        conf["spark.hadoop.fs.s3a.secret.key"] = storage.s3_secret
    return conf


def _project_python(project: Project, master: str, conf: dict[str, str]) -> str:
    from fjord.envs import environment_for_run, pack_environment

    env = environment_for_run(project)
    if env is None:
        return sys.executable  # no project environment: the platform's own
    if is_local_master(master):
        return str(env.python)
    conf["spark.archives"] = f"{pack_environment(project, env)}#{SHIPPED_ENV_NAME}"
    return f"./{SHIPPED_ENV_NAME}/bin/python"


def _gateway_popen(popen: Any) -> Any:
    """pyspark's ``Popen`` for the JVM gateway, with no Python code run in the forked child.

    pyspark passes ``preexec_fn`` (to ignore SIGINT). With one, CPython runs the fork hooks and then
    Python code in the child before ``exec``: any lock another thread held at the fork, or a garbage
    collection that frees a native object whose runtime threads did not survive it (hdfs-native's),
    hangs the child, and the parent waits for ever (a CI worker's SparkSession start sat 900 s after
    the e2e, twice). Without ``preexec_fn`` the child is C code up to ``exec``. SIGINT is ignored the
    other way: a disposition of SIG_IGN survives fork and exec, so the parent ignores it for the
    instant of the fork (on the main thread; elsewhere signals cannot be set, and pyspark's own path
    is kept)."""

    def launch(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("preexec_fn") is None or threading.current_thread() is not threading.main_thread():
            return popen(*args, **kwargs)
        kwargs.pop("preexec_fn")
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return popen(*args, **kwargs)
        finally:
            signal.signal(signal.SIGINT, previous)

    launch.fjord_wrapped = True  # type: ignore[attr-defined]
    return launch


def get_spark(
    project: Project | None = None, *, app_name: str = "fjord", conf: dict[str, str] | None = None
) -> SparkSession:
    """The process's SparkSession, configured for ``project`` (reused while the setup is the same).

    Without a project, the running session is returned as it is (library code such as the feature
    store shares the job's session); only a new project or new settings replace it. ``conf``: this
    application's own settings, over the platform's (``spark.conf`` still wins: the operator's say).
    """
    global _session, _session_key
    settings = get_settings()
    if project is None and _session is not None and _session_alive(_session):
        # Library code asking for "the" session gets the job's, whatever its project.
        return _in_job_group(configure_storage(_session, settings))
    own = conf or {}
    conf, python = spark_conf(settings, project)
    conf = {**conf, **own, **settings.spark.conf}
    key = (python, *sorted(f"{k}={v}" for k, v in conf.items() if not _runtime_conf(k)))
    if _session is not None and _session_key == key and _session_alive(_session):
        return _in_job_group(configure_storage(_session, settings))
    stop_spark()
    check_java()
    # Executors start PYSPARK_PYTHON; the driver takes it when the context is created.
    os.environ["PYSPARK_PYTHON"] = python
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    import pyspark.java_gateway
    from pyspark.sql import SparkSession

    if not getattr(pyspark.java_gateway.Popen, "fjord_wrapped", False):
        pyspark.java_gateway.Popen = _gateway_popen(pyspark.java_gateway.Popen)  # type: ignore[misc]
    builder = SparkSession.builder.appName(app_name)
    for name, value in conf.items():
        builder = builder.config(name, value)
    try:
        _session = builder.getOrCreate()
    except Exception as exc:  # the JVM's reasons arrive as Py4J/Spark errors of many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparkError(f"Spark did not start on master {settings.spark.master!r}: {first}") from exc
    _session_key = key
    log.info("SparkSession started: master=%s python=%s", settings.spark.master, python)
    return _in_job_group(_session)


def start_job(group: str) -> None:
    """Make the running session ready for a warm process's next job (fjord/jobworker.py).

    The job gets a new session over the running SparkContext (its own SQL settings, temporary views
    and functions; nothing cached by the job before it), and its Spark jobs carry ``group``, its run
    id, in the Spark UI and the event log."""
    global _session, _job_group
    _job_group = group
    if _session is not None and _session_alive(_session):
        _session.catalog.clearCache()
        _session = _session.newSession()


def _in_job_group(session: SparkSession) -> SparkSession:
    if _job_group is not None:
        session.sparkContext.setJobGroup(_job_group, _job_group, interruptOnCancel=True)
    return session


def _runtime_conf(name: str) -> bool:
    # Settings a running session takes without a restart (configure_storage), and the event log's
    # folder, which follows the project but need not restart Spark.
    return name == "spark.eventLog.dir" or name.startswith("spark.hadoop.fs.s3a.")


def configure_storage(session: SparkSession, settings: Settings | None = None) -> SparkSession:
    """Give ``session`` the storage settings in force now (S3 endpoint and keys); returns it.

    Every read and write builds its Hadoop configuration from the session's SQL conf, so this reaches
    them without a new SparkSession. :func:`get_spark` does it on every call; code handed a DataFrame
    of a session it did not get from there (a user's) calls it before writing.
    """
    for name, value in _storage_conf(settings or get_settings()).items():
        session.conf.set(name.removeprefix("spark.hadoop."), value)
    return session


def _session_alive(session: SparkSession) -> bool:
    jsc = session.sparkContext._jsc
    return jsc is not None and not jsc.sc().isStopped()


def task_slots(session: SparkSession) -> int:
    """How many tasks the session runs at once: the cores of ``local[N]`` (``local[*]``: this
    host's), or those of a cluster's executors (:func:`executor_cores`)."""
    master = session.sparkContext.master or ""
    if master == "local":
        return 1
    if is_local_master(master):
        cores = master[len("local[") :].split(",")[0].rstrip("]")
        return (os.cpu_count() or 1) if cores == "*" else int(cores)
    return sum(executor_cores(session)) or session.sparkContext.defaultParallelism


def executor_cores(session: SparkSession) -> list[int]:
    """The cores of each executor of a cluster master (``spark://``, ``yarn``, ``k8s://``,
    ``local-cluster``), once the executors it asked for have registered.

    Executors register after the session starts, one by one: counted at once, a fresh session on a
    standalone or YARN master has none or a few. So this waits, up to
    ``spark.scheduler.maxRegisteredResourcesWaitingTime`` (30 s by default), for the executors the
    configuration asks for, or, when it names no count, until the count has held for two seconds.
    The cores come from Spark's status API (``/api/v1/applications/<id>/executors``); with the UI
    disabled, from ``spark.executor.cores``.
    """
    import time

    conf = session.sparkContext.getConf()
    expected = _expected_executors(conf)
    limit = time.monotonic() + _seconds(conf.get("spark.scheduler.maxRegisteredResourcesWaitingTime", "30s"))
    if session.sparkContext.uiWebUrl is None:
        return [int(conf.get("spark.executor.cores", "1"))] * (expected or 1)
    seen: list[int] = []
    steady_since = time.monotonic()
    while True:
        cores = _registered_executor_cores(session)
        if cores != seen:
            seen, steady_since = cores, time.monotonic()
        enough = len(seen) >= expected if expected else (seen and time.monotonic() - steady_since >= 2)
        if enough or time.monotonic() >= limit:
            return seen
        time.sleep(0.25)


def _expected_executors(conf: Any) -> int | None:
    master = conf.get("spark.master", "")
    if master.startswith("local-cluster["):
        return int(master[len("local-cluster[") :].split(",")[0])
    if conf.get("spark.dynamicAllocation.enabled", "false") == "true":
        for key in ("spark.dynamicAllocation.initialExecutors", "spark.dynamicAllocation.minExecutors"):
            if conf.contains(key):
                return int(conf.get(key)) or None
        return None
    if conf.contains("spark.executor.instances"):
        return int(conf.get("spark.executor.instances"))
    if master.startswith("yarn"):
        return 2  # YARN's default
    if conf.contains("spark.cores.max") and conf.contains("spark.executor.cores"):
        return int(conf.get("spark.cores.max")) // int(conf.get("spark.executor.cores"))
    return None


def _registered_executor_cores(session: SparkSession) -> list[int]:
    import json
    from urllib.request import Request, urlopen

    context = session.sparkContext
    url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/executors"
    request = Request(url, headers={"Authorization": f"Bearer {ui_token(session)}"})
    with urlopen(request, timeout=10) as response:
        executors = json.load(response)
    return sorted(int(e["totalCores"]) for e in executors if e["id"] != "driver" and e.get("isActive", True))


def _seconds(duration: str) -> float:
    """A Spark time setting (``30s``, ``2min``, ``500ms``, or plain milliseconds) in seconds."""
    units = {"ms": 0.001, "s": 1, "min": 60, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration[: -len(unit)]) * units[unit]
    return float(duration) / 1000


def stop_spark() -> None:
    """Stop the process's SparkSession, if any."""
    global _session, _session_key
    if _session is not None:
        _session.stop()
    _session, _session_key = None, None


atexit.register(stop_spark)

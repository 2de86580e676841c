"""Shared fixtures: every test gets its own FJORD_HOME; one SparkSession and one set of servers serve the
whole session.

The servers are the embedded stack's own (:mod:`fjord.services`: PostgreSQL, Redis, Kafka, HDFS, S3),
started on first use under one session directory, on free ports, and stopped when the session ends,
so the suite needs nothing running beforehand and leaves nothing running after.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fjord.config import reset_settings

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """No FJORD_* setting of the shell reaches the session: the session's servers (MLflow, Kafka, ...)
    start before any test's own FJORD_HOME exists, and a developer's ``FJORD_HOME`` would otherwise put
    them in the developer's home, where a test session's tear-down stops the developer's servers.
    Settings give the environment priority over arguments, so ``Settings(home=...)`` alone is not enough."""
    for name in [n for n in os.environ if n.startswith("FJORD_")]:
        del os.environ[name]
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        # Each worker is a host of its own for what Fjord keeps per host in the temporary directory
        # (the trials' core locks): the e2e's training must not hold the cores another worker's test
        # pins its trials to.
        import tempfile

        os.environ["TMPDIR"] = config._fjord_tmpdir = tempfile.mkdtemp(prefix=f"fjord-{worker}-")
        tempfile.tempdir = None


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    if getattr(config, "_fjord_tmpdir", None):
        shutil.rmtree(config._fjord_tmpdir, ignore_errors=True)


# tests/cluster/ is the cluster profile's fault matrix: `make test-cluster` (FJORD_TEST_CLUSTER=1)
# runs it, not `make test` (docs/scaling.md); outside it, it is not collected (not skipped).
collect_ignore = [] if os.environ.get("FJORD_TEST_CLUSTER") else ["cluster"]


@pytest.fixture(autouse=True)
def fjord_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty embedded stack under tmp_path, with no FJORD_* settings leaking in from outside."""
    for name in list(os.environ):
        if name.startswith("FJORD_"):
            monkeypatch.delenv(name)
    home = tmp_path / "fjord-home"
    monkeypatch.setenv("FJORD_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    reset_settings()
    yield home
    reset_settings()
    _stop_services_of(home)


def _stop_services_of(home: Path) -> None:
    """Stop the embedded servers a test's home started on first use (a model server's inference
    log starts the home's Kafka): a JVM per such test outlived the suite."""
    from fjord import cluster
    from fjord.config import ClusterSettings
    from fjord.services import SERVICE_NAMES, service_at

    for name in SERVICE_NAMES:
        if (home / "services" / name / "state.json").exists():
            service_at(name, home).stop()
    for name in cluster.SERVICE_NAMES:  # the cluster profile's (tests/integration/test_cluster.py)
        if (cluster.services_home(home) / "services" / name / "state.json").exists():
            service_at(name, cluster.services_home(home), cluster=ClusterSettings()).stop()


@pytest.fixture(scope="session")
def spark_session():
    """The test session's one SparkSession (local[2]), stopped at the end."""
    from fjord import spark as fjord_spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    fjord_spark.get_spark(app_name="fjord-tests")
    yield
    fjord_spark.stop_spark()
    # py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after
    # pytest closed the streams its handlers write to ("--- Logging error ---" at the end of a run).
    import logging

    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture
def spark(spark_session):
    """The process's live SparkSession: the session's one, or whichever a test put in its place (a job
    in a project environment replaces it), so no test holds a stopped one."""
    from fjord import spark as fjord_spark

    return fjord_spark.get_spark(app_name="fjord-tests")


def run_fjord(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600):
    """Run the installed ``fjord`` console script in a subprocess, as a user would. A hang fails the test
    with the command and the tail of what it printed (where it stopped, and its log's path)."""
    import subprocess

    fjord = Path(sys.executable).with_name("fjord")
    try:
        return subprocess.run(
            [str(fjord), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        printed = (
            (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        )
        pytest.fail(
            f"`fjord {' '.join(args)}` did not end in {timeout:.0f} s; it printed:\n{(printed or '')[-3000:]}"
        )


_MLFLOW_LOGINS: dict[str, dict[str, str]] = {}  # the session's MLflow servers' logins, by URI
_MLFLOW_HOMES: dict[str, Path] = {}


def mlflow_at(settings: object) -> Iterator[str]:
    """An embedded MLflow server of its own home (``settings``), for a fixture to share; its URI."""
    from fjord.experiment.tracking import login, start_server, stop_server

    uri = start_server(settings)  # type: ignore[arg-type]
    _MLFLOW_LOGINS[uri] = login(settings)  # type: ignore[arg-type]
    _MLFLOW_HOMES[uri] = settings.home  # type: ignore[attr-defined]
    yield uri
    stop_server(settings)  # type: ignore[arg-type]


def mlflow_home(uri: str) -> Path:
    """The home of the session's MLflow server at ``uri``."""
    return _MLFLOW_HOMES[uri]


def use_mlflow(monkeypatch: pytest.MonkeyPatch, uri: str) -> str:
    """Point this test's settings at one of the session's MLflow servers, as a user points Fjord at
    any MLflow: the URI in ``mlflow.tracking_uri``, the login in MLflow's own variables."""
    monkeypatch.setenv("FJORD_MLFLOW__TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", _MLFLOW_LOGINS[uri]["username"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", _MLFLOW_LOGINS[uri]["password"])
    reset_settings()
    return uri


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (the embedded one, started once for the session); its URI.

    It starts in whichever test asks for it first, so it starts with none of that test's ``FJORD_*``
    settings: a server first asked for under an ``s3://`` storage root kept its default artifact root
    on S3 for the rest of the session, and later tests, without S3 keys, failed to log a model."""
    from fjord.config import Settings

    with pytest.MonkeyPatch.context() as clean:
        for name in [n for n in os.environ if n.startswith("FJORD_")]:
            clean.delenv(name)
        server = mlflow_at(Settings(home=tmp_path_factory.mktemp("mlflow-home")))
        uri = next(server)
    yield uri
    next(server, None)  # stops it


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's settings point at the session's MLflow server (any tracking URI is one setting)."""
    return use_mlflow(monkeypatch, mlflow_server)


@pytest.fixture(scope="session")
def services_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one home of the session's embedded servers (apart from each test's FJORD_HOME)."""
    return tmp_path_factory.mktemp("services")


def _serve(name: str, home: Path, *, storage: bool = False) -> Iterator[str]:
    """Server ``name`` for the session. A storage server's (``storage``) go after the session's
    SparkSession: Spark's clients of it (the event log of a session on its root) would retry a
    stopped server at Spark's stop. (S3A did, for 300 s of the suite's end, when S3 was stopped
    first: CI, 2026-12-07.)"""
    from fjord.services import service_at
    from fjord.spark import stop_spark

    server = service_at(name, home, preferred_ports=False)
    yield server.start()
    if storage:
        stop_spark()
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(services_home: Path) -> Iterator[str]:
    """A real PostgreSQL for the session; the URL of its ``postgres`` database."""
    yield from _serve("postgres", services_home)


@pytest.fixture
def postgres_db(postgres_server: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped after it); its URL."""
    from sqlalchemy import create_engine, text

    from fjord.metadata import engine_for

    name = f"fjord_test_{uuid.uuid4().hex[:10]}"
    url = postgres_server.rsplit("/", 1)[0] + f"/{name}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)  # restarts
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield url
    engine_for(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_server(services_home: Path) -> Iterator[str]:
    """A real Redis-protocol server (the embedded Valkey) for the session; its URL."""
    yield from _serve("redis", services_home)


@pytest.fixture(scope="session")
def kafka_server(services_home: Path) -> Iterator[str]:
    """A real Apache Kafka broker (KRaft) for the session; its bootstrap address."""
    yield from _serve("kafka", services_home)


@pytest.fixture(scope="session")
def kafka_login(kafka_server: str, services_home: Path) -> dict[str, str]:
    """kafka-python's options that log in to the session's broker (SASL/PLAIN, its generated login)."""
    from fjord.services import service_at

    return service_at("kafka", services_home, preferred_ports=False).client_options()  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def broker(kafka_server: str, kafka_login: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's settings (and its subprocesses') point at the session's broker, as a user points
    Fjord at any cluster: its address and its SASL login."""
    monkeypatch.setenv("FJORD_KAFKA__BOOTSTRAP_SERVERS", kafka_server)
    monkeypatch.setenv("FJORD_KAFKA__SASL_USERNAME", kafka_login["sasl_plain_username"])
    monkeypatch.setenv("FJORD_KAFKA__SASL_PASSWORD", kafka_login["sasl_plain_password"])
    reset_settings()
    return kafka_server


@pytest.fixture(scope="session")
def hdfs_server(services_home: Path) -> Iterator[str]:
    """A real HDFS (NameNode + DataNode) for the session; its ``hdfs://host:port`` URI."""
    yield from _serve("hdfs", services_home, storage=True)


@pytest.fixture(scope="session")
def s3_endpoint(services_home: Path) -> Iterator[str]:
    """A real S3 server (SeaweedFS) for the session, with the bucket ``fjord``; its endpoint URL."""
    yield from _serve("s3", services_home, storage=True)


@pytest.fixture(scope="session")
def s3_secret(services_home: Path, s3_endpoint: str) -> str:
    """The secret key of the session's S3 server (generated for its home)."""
    from fjord.services import service_at

    return service_at("s3", services_home, preferred_ports=False).credentials()["secret_key"]


# How `make test` spreads the suite over its two workers (pytest-xdist, ``--dist loadgroup``): the
# e2e (its own stack) on one, every test of the shared SparkSession on the other, so no worker starts
# a second JVM, MLflow or set of servers it could share; the other tests fill in around them. The
# costliest first, so the e2e starts at once instead of last.
_COST_ORDER = ("tests/e2e/", "tests/integration/", "tests/contract/", "tests/unit/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next((i for i, prefix in enumerate(_COST_ORDER) if path.startswith(prefix)), len(_COST_ORDER))

    items.sort(key=rank)  # stable: each group keeps its file order
    seen: set[str] = set()
    twice = sorted({item.nodeid for item in items if item.nodeid in seen or seen.add(item.nodeid)})
    if twice:  # xdist's grouped scheduling keys work by node id: all but one of them would not run
        raise pytest.UsageError(f"tests share a node id (give each its own id): {twice[:3]}")
    for item in items:
        if item.nodeid.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.xdist_group("e2e"))
        elif item.get_closest_marker("spark") or {"spark", "spark_session"} & set(item.fixturenames):
            item.add_marker(pytest.mark.xdist_group("spark"))

"""Spark through fjord.spark: the session factory, the shared filesystem and project environments."""

import base64
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fjord.config import get_settings
from fjord.envs import build_environment, spec_from_file
from fjord.projects import create_project
from fjord.spark import get_spark, spark_conf
from tests.conftest import REPO

pytestmark = pytest.mark.spark


def test_session_is_reused(spark) -> None:
    assert get_spark(app_name="fjord-tests") is spark


def test_the_driver_ui_asks_for_this_home_s_token(spark) -> None:
    """The driver's web UI and status API (127.0.0.1:4040 and up) answer 403 without a token signed
    with the home's key, or with one signed with another key; 200 with ``ui_token``. (The suite's
    session was made in the session's home: its token is the session's.)"""
    import urllib.error
    import urllib.request

    import jwt

    from fjord.spark import ui_key, ui_token

    url = f"{spark.sparkContext.uiWebUrl}/api/v1/applications"
    forged = jwt.encode({"sub": "fjord"}, b"k" * 32, algorithm="HS256")
    for headers in ({}, {"Authorization": f"Bearer {forged}"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert refused.value.code == 403
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ui_token(spark)}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and spark.sparkContext.applicationId.encode() in response.read()
    key = ui_key(get_settings())  # a home's key: made once, mode 600, the same on every ask
    assert key == ui_key(get_settings()) and len(base64.urlsafe_b64decode(key)) == 32
    assert oct((get_settings().home / "spark" / "ui.key").stat().st_mode & 0o777) == "0o600"


def test_spark_reads_what_publish_wrote_by_the_same_uri(spark) -> None:
    project = create_project("fraud")
    fs = project.fs
    with fs.publish("Resources/landing/b1") as out:
        spark.range(100).selectExpr("id", "id * 2 AS twice").write.parquet(out.spark_uri())
        assert spark.read.parquet(out.spark_uri()).count() == 100
    df = spark.read.parquet(fs.spark_uri("Resources/landing/b1"))
    assert df.count() == 100 and df.agg({"twice": "sum"}).first()[0] == 9900
    assert fs.is_published("Resources/landing/b1")


def test_local_master_uses_the_project_environment_in_place() -> None:
    project = create_project("fraud")
    env = build_environment(project, spec_from_file("requirements.txt", "pyjokes==0.8.3\n"))
    conf, python = spark_conf(get_settings(), project)
    assert python == str(env.python)
    assert "spark.archives" not in conf
    assert conf["spark.eventLog.dir"] == project.fs.spark_uri("Logs/spark-events")
    assert conf["spark.sql.shuffle.partitions"] == "4"


def test_cluster_master_ships_the_packed_environment(monkeypatch) -> None:
    monkeypatch.setenv("FJORD_SPARK__MASTER", "spark://cluster:7077")
    project = create_project("fraud")
    env = build_environment(project, spec_from_file("requirements.txt", "pyjokes==0.8.3\n"))
    conf, python = spark_conf(get_settings(), project)
    assert python == "./environment/bin/python"
    assert conf["spark.archives"] == project.fs.uri(f"Environments/{env.key}.tar.gz") + "#environment"


_SHIPPING_JOB = textwrap.dedent(
    """
    from fjord.envs import build_environment, spec_from_file
    from fjord.projects import create_project
    from fjord.spark import get_spark

    project = create_project("shipping")
    build_environment(project, spec_from_file("requirements.txt", "pyjokes==0.8.3\\n"))
    spark = get_spark(project, app_name="shipping-test")

    from pyspark.sql.functions import udf

    @udf("string")
    def where(_):
        import sys
        import pyjokes  # only in the project environment
        return sys.executable + " " + pyjokes.__file__

    print("RESULT", spark.range(1).select(where("id")).first()[0])
    """
)


@pytest.mark.slow
def test_executor_imports_a_package_only_in_the_shipped_environment(fjord_home) -> None:
    """Separate executor JVMs (local-cluster) unpack the archive and run the UDF in it."""
    done = subprocess.run(
        [sys.executable, "-c", _SHIPPING_JOB],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "FJORD_HOME": str(fjord_home),
            "FJORD_SPARK__MASTER": "local-cluster[1,1,1024]",
        },
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-3000:]
    executable, module = lines[0].split()[1:]
    assert executable.endswith("/environment/bin/python")  # unpacked from spark.archives
    assert not executable.startswith(str(fjord_home))  # not the driver's copy: the executor's own
    assert module.startswith(executable.removesuffix("bin/python"))  # imported from the archive
    # local-cluster workers always work in $SPARK_HOME/work (the pyspark package): leave it clean.
    shutil.rmtree(Path(executable).parents[3], ignore_errors=True)


_SLOTS_JOB = textwrap.dedent(
    """
    from fjord.experiment.runner import task_slots
    from fjord.spark import get_spark

    print("SLOTS", task_slots(get_spark(app_name="slots-test")))
    """
)


@pytest.mark.slow
def test_task_slots_wait_for_a_clusters_executors(fjord_home) -> None:
    """A fresh session on a cluster master has executors still registering: counted at once, two
    one-core workers looked like one slot."""
    done = subprocess.run(
        [sys.executable, "-c", _SLOTS_JOB],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FJORD_HOME": str(fjord_home), "FJORD_SPARK__MASTER": "local-cluster[2,1,1024]"},
    )
    assert "SLOTS 2" in done.stdout.splitlines(), done.stderr[-3000:]


def test_library_code_shares_the_jobs_session(spark) -> None:
    """A job's session in a project environment is not replaced when library code asks for Spark."""
    project = create_project("fraud")
    build_environment(project, spec_from_file("requirements.txt", ""))
    job_session = get_spark(project, app_name="job")
    frame = job_session.range(5).cache()
    assert get_spark() is job_session  # what the feature store does, mid-job
    assert frame.count() == 5  # the job's DataFrames still work
    get_spark(app_name="fjord-tests")  # the shared test session for the rest of the suite


def test_a_spark_tasks_s3_secret_reaches_spark_but_not_its_command_line(tmp_path, monkeypatch) -> None:
    """The Airflow hook's spark-submit, with S3 credentials configured: the job's SparkSession has the
    secret (from the mode-600 properties file), the command line that ps and the task log show has not."""
    from fjord.airflow.hook import STAGES, FjordJobHook, _secrets_to_file
    from fjord.config import reset_settings

    monkeypatch.setenv("FJORD_STORAGE__S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("FJORD_STORAGE__S3_KEY", "probe-access")
    monkeypatch.setenv("FJORD_STORAGE__S3_SECRET", "probe-secret-value")
    reset_settings()
    project = create_project("fraud")
    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent("""
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        print("secret:", spark.conf.get("spark.hadoop.fs.s3a.secret.key"))
        spark.stop()
    """)
    )
    argv = [*FjordJobHook().command("etl", STAGES["etl"], project)[:-1], str(probe)]
    argv = _secrets_to_file(argv, tmp_path / "secrets.properties")
    assert "probe-secret-value" not in " ".join(argv) and "probe-access" not in " ".join(argv)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "secret: probe-secret-value" in done.stdout


_START_WITH_A_FORK_HOOK = """
import os, sys
from pathlib import Path
marker = Path(sys.argv[1])
# What hung a CI worker for 900 s: Python code run in the forked child before exec (a hook, a
# collection freeing a native object). Here a hook that leaves a mark instead.
os.register_at_fork(after_in_child=lambda: marker.write_text("python ran in the child"))
from fjord.spark import get_spark, stop_spark
spark = get_spark(app_name="no-python-in-the-child")
assert spark.range(3).count() == 3
pid = spark.sparkContext._gateway.proc.pid
ignored = int(next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if l.startswith("SigIgn:")).split()[1], 16)
print("sigint-ignored" if ignored & (1 << 1) else "sigint-delivered")
stop_spark()
"""


def test_the_jvm_gateway_starts_with_no_python_in_the_forked_child(tmp_path) -> None:
    """pyspark forks the JVM with a ``preexec_fn``, so Python ran in the child before exec; Fjord
    starts it with none (the child is C code up to exec), and the JVM still ignores Ctrl-C."""
    marker = tmp_path / "marker"
    done = subprocess.run([sys.executable, "-c", _START_WITH_A_FORK_HOOK, str(marker)], capture_output=True,
                          text=True, timeout=300, check=False, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert not marker.exists()
    assert done.stdout.strip().splitlines()[-1] == "sigint-ignored"

"""The hook every Fjord task uses: run one stage job as its own process, idempotently.

A Spark stage (ETL, the features job, training, batch scoring) is submitted with ``spark-submit``
against ``spark.master``, with the same configuration :func:`fjord.spark.spark_conf` gives an
interactive session: the project's environment (shipped as an archive on a cluster master), the
event log, the storage settings and the jars. A stage without Spark (deployment, maintenance) runs
as ``python -m``. The job's output goes to the task's log.

Idempotency: the task's run id is derived from the DAG, the DAG run, the task and its map index
(:func:`task_run_id`), and the job's run record carries it. The job completes its run in one write:
when it returns, it records its result (the small references a DAG passes on: URIs, versions, run
ids) in that run record (:func:`fjord.jobmain.run_job`). A task whose run record holds a result (the
task was cleared, or the scheduler died after the job finished) returns it instead of running again:
no second commit, model version or deployment. A job killed after its work but before that write is
run again, and each job's work is idempotent under its run id: the ETL finds its rows published, the
training job finds the model version it registered, a deploy finds its version serving.

Exit codes become Airflow's outcomes (each code has one meaning, docs/architecture.md): bad input
(2), something missing (3) or already there (4), a table with commits the metadata database does not
know (17) and a rejected batch (19) fail the task at once, since a retry cannot help; a candidate
the gate refuses (20) skips what follows; anything else is retried with back-off.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from fjord import stepcache
from fjord.airflow.client import dag_run_record_id
from fjord.config import get_settings
from fjord.errors import NotFoundError
from fjord.jobmain import RESULT_FILE
from fjord.lineage import get_run
from fjord.pipeline import STAGES, Stage
from fjord.private import write_private
from fjord.projects import get_project

REPO = Path(__file__).resolve().parents[2]

FAIL_AT_ONCE = {2, 3, 4, 17, 19}  # bad input, not found, already exists, unknown commits, batch rejected
SKIP = {20}  # the gate refused the candidate: a decision, not an error


class FjordJobHook(BaseHook):
    """Runs a stage job for a task; see the module docstring."""

    def run(
        self, stage: str, args: dict[str, Any], *, run_id: str, parent_run_id: str, cache: bool = True
    ) -> dict[str, Any]:
        """Run ``stage`` with ``args`` (its spec's fields) under ``run_id``; the job's result. With
        ``cache``, a cacheable stage whose earlier run had the same fingerprint and inputs that are
        still current returns that run's result instead (fjord/stepcache.py)."""
        if stage not in STAGES:
            raise AirflowFailException(f"no stage {stage!r} (stages: {', '.join(STAGES)})")
        project = get_project(str(args["project"]))
        done = self._recorded_result(run_id)
        if done is not None:
            self.log.info("run %s already succeeded: reusing its result, running nothing", run_id)
            return done
        key, reused = stepcache.look_up(
            project, stage, args, cache=cache, run_id=run_id, parent_run_id=parent_run_id
        )
        if reused is not None:
            self.log.info(
                "reusing run %s: same inputs, code, environment and arguments", reused["reused_from"]
            )
            return reused
        spec = STAGES[stage]
        options = _options({**args, "run_id": run_id, "parent_run_id": parent_run_id})
        with tempfile.TemporaryDirectory(prefix="fjord-task-") as tmp:
            result_file = Path(tmp) / "result.json"
            code, tail = self._run_in_worker(spec, options, result_file, run_id, str(args["project"]))
            if code is None:
                argv = _secrets_to_file(
                    self.command(stage, spec, project) + options, Path(tmp) / "secrets.properties"
                )
                code, tail = self._execute(argv, {RESULT_FILE: str(result_file), **self._environment(spec)})
            if code != 0:
                raise _outcome(stage, spec, code, tail)
            result = json.loads(result_file.read_text())
        if key:
            stepcache.remember(run_id, key)
        return dict(result)

    # -- pieces ----------------------------------------------------------------------------------

    def command(self, stage: str, spec: Stage, project: Any) -> list[str]:
        """``spark-submit ... main.py`` for a Spark stage, ``python -m module`` otherwise."""
        if not spec.spark:
            return [sys.executable, "-m", spec.module]
        from fjord.spark import check_java, spark_conf

        check_java()
        conf, _python = spark_conf(get_settings(), project)
        submit = [_spark_submit(), "--master", conf.pop("spark.master"), "--name", f"fjord-{stage}"]
        submit += ["--driver-memory", conf.pop("spark.driver.memory")]
        for key, value in conf.items():
            submit += ["--conf", f"{key}={value}"]
        return [*submit, str(REPO / (spec.module.replace(".", "/") + ".py"))]

    def _run_in_worker(
        self, spec: Stage, options: list[str], result_file: Path, run_id: str, project: str
    ) -> tuple[int | None, list[str]]:
        """Run the job in the embedded Airflow's warm job worker (fjord/jobworker.py); its exit code
        and last lines, or ``None`` when the worker did not take it (the job then runs as its own process)."""
        settings = get_settings()
        clustered = settings.services.profile == "cluster"  # no job worker there (fjord/airflow/stack.py)
        if not settings.airflow.job_worker.enabled or settings.airflow.api_url or clustered:
            return None, []
        from fjord.airflow.stack import airflow_service
        from fjord.jobworker import JOB_ENV, JobWorkerClient, settings_digest

        client = JobWorkerClient(
            airflow_service(settings).job_worker_socket, wait_s=settings.airflow.job_worker.wait_seconds
        )
        env = {name: os.environ[name] for name in JOB_ENV if name in os.environ}
        request = {
            "module": spec.module,
            "argv": options,
            "env": {**env, RESULT_FILE: str(result_file)},
            "settings": settings_digest(settings),
            "run_id": run_id,
            "project": project,
        }
        tail: deque[str] = deque(maxlen=40)

        def show(line: str) -> None:
            if not tail:
                self.log.info(
                    "running %s %s in the job worker (%s)", spec.module, " ".join(options), client.worker
                )
            tail.append(line)
            self.log.info("%s", line)

        code = client.run(request, show)
        if code is None:
            self.log.info("the job worker did not take the job: %s", client.why_not)
        return code, list(tail)

    def _environment(self, spec: Stage) -> dict[str, str]:
        env = {"PYTHONUNBUFFERED": "1", "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
        if spec.spark:
            env["PYSPARK_DRIVER_PYTHON"] = sys.executable
            env.setdefault("PYSPARK_PYTHON", sys.executable)  # the job's session sets the project's
        return env

    def _execute(self, argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
        """Run ``argv``, its output line by line into the task log; the exit code and the last lines."""
        self.log.info("running %s", " ".join(argv))
        tail: deque[str] = deque(maxlen=40)
        with subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            cwd=REPO,
            text=True,
            errors="replace",
        ) as process:
            assert process.stdout is not None
            try:
                for line in process.stdout:
                    line = line.rstrip()
                    tail.append(line)
                    self.log.info("%s", line)
            except BaseException:  # the task is being killed (timeout, mark failed): take the job along
                process.kill()
                raise
            return process.wait(), list(tail)

    def _recorded_result(self, run_id: str) -> dict[str, Any] | None:
        try:
            record = get_run(run_id)
        except NotFoundError:
            return None
        return record.result if record.status == "succeeded" else None


def _secrets_to_file(argv: list[str], path: Path) -> list[str]:
    """``argv`` with every secret ``--conf`` (an S3 secret key, a password, a token) moved to a
    mode-600 properties file passed as ``--properties-file``: a command line is visible in ``ps`` and
    the task log prints it."""
    kept: list[str] = []
    hidden: list[str] = []
    pairs = iter(argv)
    for arg in pairs:
        if arg == "--conf":
            setting = next(pairs)
            if _SECRET.search(setting.split("=", 1)[0]):
                hidden.append(setting.replace("=", " ", 1))
                continue
            kept += [arg, setting]
        else:
            kept.append(arg)
    if not hidden:
        return argv
    write_private(path, "\n".join(hidden) + "\n")
    return [kept[0], "--properties-file", str(path), *kept[1:]]


_SECRET = re.compile(r"secret|password|token|access\.key", re.I)


def _spark_submit() -> str:
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-submit")


def _options(args: dict[str, Any]) -> list[str]:
    """A spec's fields as the job's command-line options (``--no-x`` for a false boolean)."""
    argv: list[str] = []
    for name, value in args.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list | tuple):  # a list field takes its items comma-separated
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def _error_line(tail: list[str]) -> str:
    for line in reversed(tail):
        if line.startswith(("error:", "internal error:")):
            return line.split(":", 1)[1].strip() if line.startswith("error:") else line
    return tail[-1] if tail else "no output"


def _outcome(stage: str, spec: Stage, code: int, tail: list[str]) -> AirflowException:
    """The Airflow exception an exit code means (see the module docstring)."""
    message = f"{stage} job exited {code}: {_error_line(tail)}"
    if code in FAIL_AT_ONCE:
        return AirflowFailException(message)
    if code in SKIP:
        return AirflowSkipException(message)
    return AirflowException(message)


def record_dag_run_cause(project_name: str, dag_id: str, dag_run_id: str, cause: dict[str, Any]) -> str:
    """Write the DAG run's own run record (the parent of its tasks' runs) with why it started; its id."""
    from fjord.lineage import new_record, save_run

    project = get_project(project_name)
    record = new_record(
        project, "dag_run", params={"dag_id": dag_id, "dag_run_id": dag_run_id, "cause": cause},
        run_id=dag_run_record_id(dag_id, dag_run_id),
    )  # fmt: skip
    record.status = "succeeded"
    save_run(project, record)
    return record.run_id

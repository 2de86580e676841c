"""The driver side of an experiment: trials as Spark tasks, their results, MLflow, lineage.

Each trial is a Spark job of one task, submitted from a driver thread; as many run at once as the
cluster has task slots, so trials spread over the executors (each running the project's
environment). On the executor the task runs the trial in a child process (``python -m
fjord.experiment``, see :mod:`fjord.experiment.trial`) and retries it once if it fails. A failed
trial is recorded and the search goes on; a task lost with its executor counts as a failed trial.

Layout of ``Experiments/<run_id>/`` on the shared filesystem::

    experiment.json   what was run (kind, function, space, seed, options) and how it ended
    function.pkl      the training function (cloudpickle), for reruns
    trials/<t>/       one directory per trial (see :mod:`fjord.experiment.trial`)
    tensorboard/<t>/  TensorBoard events of every trial: one logdir for all
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fjord.config import StorageSettings, get_settings
from fjord.errors import FjordError
from fjord.experiment.cores import reserved_cores
from fjord.experiment.stopping import Direction, MedianStopping
from fjord.experiment.tracking import Tracker, tracking_uri
from fjord.experiment.trial import COMPLETED, FUNCTION_FILE
from fjord.fs import SharedFS, backend_for
from fjord.lineage import track_run
from fjord.projects import Project

log = logging.getLogger(__name__)

EXPERIMENTS = "Experiments"
MAX_ATTEMPTS = 2  # a failing trial is retried once
WARM_IDLE_SECONDS = 60  # a trial process waits this long for the next trial of its search


class ExperimentError(FjordError):
    """An experiment could not run, or none of its trials succeeded."""

    exit_code = 10


@dataclass
class TrialResult:
    trial: str
    params: dict[str, Any]
    status: str  # succeeded | stopped | failed
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    steps: int = 0
    seconds: float = 0.0
    seed: int | None = None
    mlflow_run_id: str | None = None


@dataclass
class ExperimentResult:
    """What an experiment produced; ``best`` is the best succeeded trial (stopped ones are not)."""

    run_id: str
    kind: str
    uri: str
    optimization_key: str | None
    direction: Direction
    trials: list[TrialResult]
    mlflow_run_id: str | None = None

    @property
    def best(self) -> TrialResult | None:
        done = [t for t in self.trials if t.status == "succeeded" and self.optimization_key in t.metrics]
        if not done:
            done = [t for t in self.trials if t.status == "succeeded"]
            return done[0] if done else None
        pick = max if self.direction == "max" else min
        return pick(done, key=lambda t: t.metrics[self.optimization_key])  # type: ignore[index]

    @property
    def best_params(self) -> dict[str, Any]:
        return self.best.params if self.best else {}

    @property
    def metrics(self) -> dict[str, float]:
        return self.best.metrics if self.best else {}

    def summary(self) -> str:
        counts = {s: sum(t.status == s for t in self.trials) for s in ("succeeded", "stopped", "failed")}
        best = self.best
        what = (
            f"best {self.optimization_key}={best.metrics.get(self.optimization_key)} with {best.params}"
            if (best and self.optimization_key)
            else (f"metrics {best.metrics}" if best else "no trial succeeded")
        )
        return (
            f"{self.kind} {self.run_id}: {len(self.trials)} trial(s), {counts['succeeded']} succeeded, "
            f"{counts['stopped']} stopped early, {counts['failed']} failed; {what}; {self.uri}"
        )


# -- on the executor -----------------------------------------------------------------------------------


def _trial_process_setup(cores: set[int] | None) -> Callable[[], None]:
    """What the trial process does before it starts: die when the Spark worker that started it dies
    (task killed), and keep to its task's ``cores``."""

    def setup() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if cores:
            os.sched_setaffinity(0, cores)

    return setup


def execute_trial(task: Mapping[str, Any]) -> dict[str, Any]:
    """Run one trial on this executor, in a child process, retrying once; its ``result.json``."""
    # The driver's storage settings, not this worker's environment: executors on a cluster (or
    # started before the settings changed) may not have them.
    storage = StorageSettings.model_validate(task["storage"])
    fs = SharedFS(task["experiment_uri"], backend=backend_for(task["experiment_uri"], storage))
    rel = f"trials/{task['trial']}"
    on_disk = fs.backend.scheme == "file"
    workdir = Path(fs.path(rel)) if on_disk else Path(tempfile.mkdtemp(prefix="fjord-trial-"))
    workdir.mkdir(parents=True, exist_ok=True)
    threads = int(task.get("threads", 1))
    env = {
        **os.environ,
        "TF_NUM_INTRAOP_THREADS": str(threads),  # as many threads as the task has cores
        "TF_NUM_INTEROP_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONHASHSEED": "0",  # fixed: a warm process serves trials of different seeds
        **storage.as_environment(),
        **task.get("env", {}),
    }
    result: dict[str, Any] = {}
    with reserved_cores(threads) as cores:
        for attempt in range(1, task.get("attempts", MAX_ATTEMPTS) + 1):
            for stale in ("result.json", "progress.json"):
                if fs.exists(f"{rel}/{stale}"):
                    fs.rm(f"{rel}/{stale}")
            code = _attempt(task, workdir, env, cores, attempt)
            if fs.exists(f"{rel}/result.json"):
                result = json.loads(fs.read_text(f"{rel}/result.json"))
            else:
                how = f"signal {-code}" if code < 0 else f"code {code}"
                result = {"trial": task["trial"], "params": task["params"], "status": "failed",
                          "error": f"the trial process died ({how}) before reporting a result"}  # fmt: skip
            if result["status"] in COMPLETED:
                break
    result["attempts"] = attempt
    if not on_disk:
        for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
            fs.upload(str(path), f"{rel}/{path.relative_to(workdir).as_posix()}")
        shutil.rmtree(workdir, ignore_errors=True)
    fs.write_text(f"{rel}/result.json", json.dumps(result))
    return result


def _attempt(
    task: Mapping[str, Any], workdir: Path, env: dict[str, str], cores: set[int] | None, attempt: int
) -> int:
    """Run the trial once, its output appended to ``output.log``; the exit code. A first attempt in
    a search goes to this worker's warm trial process when there is one for the search."""
    global _warm
    pinned = f" on cores {sorted(cores)}" if cores else ""
    argv = [task["experiment_uri"], task["trial"], str(workdir)]
    with (workdir / "output.log").open("ab") as out:
        out.write(f"\n=== {task['trial']} attempt {attempt} on {os.uname().nodename}{pinned} ===\n".encode())
        out.flush()
        if attempt == 1 and task.get("reuse_process"):
            key = json.dumps([task["experiment_uri"], env], sort_keys=True)
            if _warm is None or _warm.key != key or _warm.process.poll() is not None:
                _discard_warm()
                _warm = _TrialProcess(key, env)
            code = _warm.run(argv, cores)  # the process appends to output.log itself
            if code != 0:  # a failed trial may have left the process in any state: never reuse it
                _discard_warm()
            if code is not None:
                return code
        return subprocess.run(
            [sys.executable, "-m", "fjord.experiment", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_trial_process_setup(cores),
            check=False,
        ).returncode


class _TrialProcess:
    """A trial process that runs the trials of one search handed to this Python worker, one after
    another (``python -m fjord.experiment --serve``); it ends by itself when left idle."""

    def __init__(self, key: str, env: dict[str, str]) -> None:
        self.key = key
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fjord.experiment", "--serve", str(write_end), str(WARM_IDLE_SECONDS)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_end,),
            preexec_fn=_trial_process_setup(None),
            text=True,
        )
        os.close(write_end)
        self.control = os.fdopen(read_end)

    def run(self, argv: list[str], cores: set[int] | None) -> int | None:
        """Hand over one trial and wait for it; its exit code (negative: the signal that killed it),
        or ``None`` if the process had ended (idle) before it took the trial."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"argv": argv, "cores": sorted(cores or [])}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return None
        if self.control.readline() != "taken\n":
            return None
        line = self.control.readline()
        return int(line) if line else self.process.wait()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.control.close()


_warm: _TrialProcess | None = None


def _discard_warm() -> None:
    global _warm
    if _warm is not None:
        _warm.close()
        _warm = None


def execute_worker(task: Mapping[str, Any], _rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """One worker of a ``distributed`` run: a barrier task that finds its peers, sets ``TF_CONFIG``
    and runs the function once. A failed worker fails the whole stage (its peers would wait forever
    in collective ops); the driver restarts the stage, which resumes from the shared checkpoints."""
    from pyspark import BarrierTaskContext

    context = BarrierTaskContext.get()
    index = context.partitionId()
    host = os.environ.get("SPARK_LOCAL_IP") or socket.gethostbyname(socket.gethostname())
    with socket.socket() as probe:  # a free port for this worker's gRPC server
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    peers = context.allGather(f"{host}:{port}")
    tf_config = {"cluster": {"worker": peers}, "task": {"type": "worker", "index": index}}
    env = {**task.get("env", {}), "TF_CONFIG": json.dumps(tf_config)}
    result = execute_trial({**task, "trial": f"{task['trial']}/worker-{index}", "attempts": 1, "env": env})
    if result["status"] not in COMPLETED:
        raise RuntimeError(f"worker {index} failed: {result.get('error')}")
    yield result


# -- on the driver -------------------------------------------------------------------------------------


def _executors_and_cores(spark: Any) -> tuple[int, int]:
    """How many executors the cluster has, and how many cores each."""
    conf = spark.sparkContext.getConf()
    master = conf.get("spark.master", "local")
    if master.startswith("local"):
        inner = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
        if master.startswith("local-cluster"):
            workers, cores, _ = inner.split(",")
            return int(workers), int(cores)
        first = inner.split(",")[0]
        return 1, (os.cpu_count() or 1) if first == "*" else int(first)
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # minus the driver
    return executors, int(conf.get("spark.executor.cores", "1"))


def task_slots(spark: Any) -> int:
    """How many tasks the cluster runs at once (executor cores / task cores)."""
    executors, cores = _executors_and_cores(spark)
    return max(executors * cores // _task_cpus(spark), 1)


def _task_cpus(spark: Any) -> int:
    return int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))


class ExperimentRun:
    """One experiment being run: its directory, run record, tracker, and the trials it launches."""

    def __init__(
        self,
        project: Project,
        kind: str,
        function: Callable[..., Any],
        *,
        name: str,
        optimization_key: str | None,
        direction: Direction,
        stopping: MedianStopping,
        seed: int | None,
        definition: dict[str, Any],
        parallel: int | None = None,
        env: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        if not callable(function):
            raise ExperimentError(f"the training function must be callable, not {type(function).__name__}")
        if direction not in ("max", "min"):
            raise ExperimentError(f"direction must be 'max' or 'min', not {direction!r}")
        self.project = project
        self.kind = kind
        self.function = function
        self.name = name
        self.optimization_key = optimization_key
        self.direction: Direction = direction
        self.stopping = stopping
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.definition = definition
        self.parallel = parallel
        self.env = dict(env or {})
        self.parent_run_id = parent_run_id
        self.results: list[TrialResult] = []
        self.trial_cores = 1  # cores a trial keeps to: set per batch of trials
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    # The whole run: set up, let ``body`` launch trials, record how it ended.
    def run(self, body: Callable[[ExperimentRun], object]) -> ExperimentResult:
        import cloudpickle

        from fjord.spark import get_spark

        try:
            payload = cloudpickle.dumps(self.function)
        except Exception as exc:  # cloudpickle raises many kinds
            raise ExperimentError(f"the training function cannot be shipped to executors: {exc}") from exc
        uri = tracking_uri()  # unreachable tracking: fail before any trial runs
        params = {"kind": self.kind, "name": self.name, "seed": self.seed, **self.definition}
        with track_run(
            self.project, "experiment", params=params, code=self._code(), parent_run_id=self.parent_run_id
        ) as record:
            self.record = record
            self.fs = self.project.fs.sub(f"{EXPERIMENTS}/{record.run_id}")
            self.fs.makedirs("trials")
            self.fs.write_bytes(FUNCTION_FILE, payload)
            self._write_definition(status="running")
            self.tracker = Tracker(
                uri, self.project.name, self.name, self.project.fs.uri(f"{EXPERIMENTS}/mlflow")
            )
            self.tracker.start(
                record.run_id, _flat(params), {"fjord.kind": self.kind, "fjord.project": self.project.name}
            )
            self.spark = get_spark(self.project, app_name=f"experiment-{self.name}")
            self.slots = self.parallel or task_slots(self.spark)
            record.add_output(self.project.fs.uri(f"{EXPERIMENTS}/{record.run_id}"), kind="experiment")
            try:
                body(self)
            except BaseException:
                self.spark.sparkContext.cancelJobGroup(record.run_id)
                self._finish("failed")
                raise
            result = self.result()
            if not any(t.status == "succeeded" for t in self.results):
                self._finish("failed")
                errors = sorted({t.error for t in self.results if t.error})
                raise ExperimentError(
                    f"{self.kind} {record.run_id}: none of {len(self.results)} trial(s) succeeded: "
                    f"{'; '.join(errors[:3])}; logs in {result.uri}/trials"
                )
            self._finish("succeeded")
            record.params["best"] = {"params": result.best_params, "metrics": result.metrics}
            return result

    def trials(self, params_list: Iterable[Mapping[str, Any]]) -> list[TrialResult]:
        """Run trials with these parameters, at most ``slots`` at once; their results in order.

        Each trial gets its task's cores; a lone trial (``launch``) shares its executor with no other
        trial of the experiment, so it gets the executor's cores."""
        params_list = list(params_list)
        self.trial_cores = _task_cpus(self.spark)
        if len(params_list) == 1:
            self.trial_cores = max(_executors_and_cores(self.spark)[1], self.trial_cores)
        futures: dict[Future[TrialResult], int] = {}
        done: dict[int, TrialResult] = {}
        with ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="trial") as pool:
            for index, params in enumerate(params_list):
                futures[pool.submit(self._run_trial, dict(params))] = index
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    trial = future.result()
                    self._log_trial(trial)
                    done[futures[future]] = trial
        return [done[i] for i in range(len(params_list))]

    def distributed(self, params: dict[str, Any], workers: int, max_restarts: int) -> TrialResult:
        """One data-parallel trial: ``workers`` barrier tasks at once, the stage restarted up to
        ``max_restarts`` times if a worker dies; the result is the chief's (worker 0)."""
        if workers > self.slots:
            raise ExperimentError(
                f"distributed training with {workers} workers needs {workers} task slots at once; "
                f"the cluster has {self.slots}"
            )
        self.trial_cores = _task_cpus(self.spark)  # each worker: its task's cores
        trial_id, seed, task = self._prepare_trial(params)
        for index in range(workers):
            spec = {**self._spec(params, seed), "worker": index, "workers": workers,
                    "checkpoints": f"checkpoints/{trial_id}"}  # fmt: skip
            self.fs.write_text(f"trials/{trial_id}/worker-{index}/params.json", json.dumps(spec, default=str))
        context = self.spark.sparkContext
        started, error = time.monotonic(), None
        for attempt in range(1, max_restarts + 2):
            context.setJobGroup(self.record.run_id, f"{self.name} {trial_id} attempt {attempt}", True)
            try:
                stage = context.parallelize(range(workers), workers).barrier()
                results = stage.mapPartitions(partial(execute_worker, task)).collect()
                break
            except Exception as exc:  # a worker died: the barrier stage failed as a whole
                error = _first_line(exc)
                log.warning("%s %s attempt %d failed: %s", self.record.run_id, trial_id, attempt, error)
        else:
            results = [{"status": "failed", "error": f"every attempt failed; the last: {error}"}]
        chief = min(results, key=lambda r: r.get("trial", ""))
        trial = self._trial_result(trial_id, params, seed, chief, started)
        trial.attempts = attempt
        self._log_trial(trial, progress_of=f"{trial_id}/worker-0")
        return trial

    def _spec(self, params: dict[str, Any], seed: int) -> dict[str, Any]:
        return {
            "params": params,
            "seed": seed,
            "optimization_key": self.optimization_key,
            "direction": self.direction,
            "stopping": self.stopping.model_dump(),
        }

    def _prepare_trial(self, params: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
        with self._lock:
            number = next(self._counter)
        trial_id, seed = f"trial-{number:04d}", self.seed + number
        task = {
            "experiment_uri": self.fs.uri(),
            "trial": trial_id,
            "params": params,
            "seed": seed,
            "threads": self.trial_cores,
            "env": self.env,
            "storage": get_settings().storage.model_dump(mode="json"),
        }
        return trial_id, seed, task

    def _run_trial(self, params: dict[str, Any]) -> TrialResult:
        trial_id, seed, task = self._prepare_trial(params)
        self.fs.write_text(
            f"trials/{trial_id}/params.json", json.dumps(self._spec(params, seed), default=str)
        )
        context = self.spark.sparkContext
        context.setJobGroup(self.record.run_id, f"{self.name} {trial_id} {params}", interruptOnCancel=True)
        started = time.monotonic()
        try:
            raw = context.parallelize([{**task, "reuse_process": True}], 1).map(execute_trial).collect()[0]
        except Exception as exc:  # Py4J/Spark errors: the task or its executor was lost
            raw = {
                "status": "failed",
                "error": f"the Spark task failed: {_first_line(exc)}",
                "attempts": MAX_ATTEMPTS,
            }
        return self._trial_result(trial_id, params, seed, raw, started)

    def _trial_result(
        self, trial_id: str, params: dict[str, Any], seed: int, raw: Mapping[str, Any], started: float
    ) -> TrialResult:
        return TrialResult(
            trial=trial_id,
            params=params,
            status=raw["status"],
            metrics=raw.get("metrics") or {},
            error=raw.get("error"),
            attempts=raw.get("attempts", 1),
            steps=raw.get("steps", 0),
            seconds=round(time.monotonic() - started, 3),
            seed=seed,
        )

    def _log_trial(self, trial: TrialResult, progress_of: str | None = None) -> None:
        rel = f"trials/{trial.trial}"
        progress_file = f"trials/{progress_of or trial.trial}/progress.json"
        progress = json.loads(self.fs.read_text(progress_file)) if self.fs.exists(progress_file) else []
        with self.fs.local_copy(rel) as files:
            trial.mlflow_run_id = self.tracker.log_trial(asdict(trial), progress, files)
        self.results.append(trial)
        log.info("%s %s: %s %s", self.record.run_id, trial.trial, trial.status, trial.metrics or trial.error)
        self._write_definition(status="running")

    def result(self) -> ExperimentResult:
        return ExperimentResult(
            run_id=self.record.run_id,
            kind=self.kind,
            uri=self.fs.uri(),
            optimization_key=self.optimization_key,
            direction=self.direction,
            trials=sorted(self.results, key=lambda t: t.trial),
            mlflow_run_id=self.tracker.parent_id,
        )

    def _finish(self, status: str) -> None:
        result = self.result()
        self._write_definition(status=status)
        self.tracker.finish(
            "succeeded" if status == "succeeded" else "failed",
            {f"best_{k}": v for k, v in result.metrics.items()},
            {"fjord.best_trial": result.best.trial} if result.best else None,
        )

    def _write_definition(self, status: str) -> None:
        record = {
            "run_id": self.record.run_id,
            "project": self.project.name,
            "kind": self.kind,
            "name": self.name,
            "status": status,
            "seed": self.seed,
            "optimization_key": self.optimization_key,
            "direction": self.direction,
            "stopping": self.stopping.model_dump(),
            "parallel": self.parallel,
            "env": self.env,
            "function": _qualified_name(self.function),
            "definition": self.definition,
            "code_version": self.record.code_version,
            "env_lock_hash": self.record.env_lock_hash,
            "parent_run_id": self.parent_run_id,
            "trials": [asdict(t) for t in sorted(self.results, key=lambda t: t.trial)],
        }
        self.fs.write_text("experiment.json", json.dumps(record, indent=2, default=str))

    def _code(self) -> list[str]:
        try:
            source = inspect.getsourcefile(self.function)
        except TypeError:
            return []
        return [source] if source and os.path.exists(source) else []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _qualified_name(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _flat(params: Mapping[str, Any]) -> dict[str, Any]:
    """Nested definitions as MLflow parameters (``space.lr``)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        else:
            flat[key] = value
    return flat

"""The driver side of an experiment: trials as Spark tasks, their results, MLflow, lineage.

Each trial is a Spark job of one task, submitted from a driver thread; as many run at once as the
cluster has task slots, so trials spread over the executors (each running the project's
environment). On the executor the task supervises the trial's process
(:mod:`fjord.experiment.executor`). A failed trial is recorded and the search goes on; a task lost
with its executor counts as a failed trial.

Stopping: an exception in the driver (Ctrl-C, a tracking error) cancels the run's Spark jobs at
once, queued trials never start, and running ones are killed with their tasks. A trial that
outlives ``trial_timeout`` is killed on its executor; should the executor itself not answer, the
driver cancels the trial's Spark job a grace period later.

Layout of ``Experiments/<run_id>/`` on the shared filesystem::

    experiment.json   what was run (kind, function, space, seed, options) and how it ended
    function.pkl      the training function (cloudpickle), for reruns
    trials/<t>/       one directory per trial (see :mod:`fjord.experiment.trial`)
    tensorboard/<t>/  TensorBoard events of every trial: one logdir for all
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from fjord.config import get_settings
from fjord.errors import FjordError
from fjord.experiment.executor import MAX_ATTEMPTS, execute_trial, execute_worker
from fjord.experiment.stopping import Direction, MedianStopping
from fjord.experiment.tracking import Tracker, tracking_uri
from fjord.experiment.trial import FUNCTION_FILE
from fjord.lineage import track_run
from fjord.progress import progress
from fjord.projects import Project
from fjord.spark import executor_cores, is_local_master

log = logging.getLogger(__name__)

EXPERIMENTS = "Experiments"
TIMEOUT_GRACE_SECONDS = 30  # after trial_timeout, how long the driver waits for the executor to kill


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


# -- on the driver -------------------------------------------------------------------------------------


def _executors_and_cores(spark: Any) -> tuple[int, int]:
    """How many executors the cluster has, and how many cores each (the fewest any has)."""
    conf = spark.sparkContext.getConf()
    master = conf.get("spark.master", "local")
    if is_local_master(master):
        inner = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
        first = inner.split(",")[0]
        return 1, (os.cpu_count() or 1) if first == "*" else int(first)
    cores = executor_cores(spark)
    return len(cores), min(cores, default=1)


def task_slots(spark: Any) -> int:
    """How many tasks the cluster runs at once (executor cores / task cores)."""
    if is_local_master(spark.sparkContext.getConf().get("spark.master", "local")):
        executors, cores = _executors_and_cores(spark)
        return max(executors * cores // _task_cpus(spark), 1)
    per_task = _task_cpus(spark)
    return max(sum(c // per_task for c in executor_cores(spark)), 1)


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
        trial_timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        if not callable(function):
            raise ExperimentError(f"the training function must be callable, not {type(function).__name__}")
        if direction not in ("max", "min"):
            raise ExperimentError(f"direction must be 'max' or 'min', not {direction!r}")
        number = isinstance(trial_timeout, int | float) and not isinstance(trial_timeout, bool)
        if trial_timeout is not None and not (number and trial_timeout > 0):
            raise ExperimentError(f"trial_timeout must be a positive number of seconds, not {trial_timeout}")
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
        self.trial_timeout = trial_timeout
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
        # Not a `with` block: leaving one waits for every queued trial to run, so a Ctrl-C or a
        # tracking error would wait for the whole search before it stopped.
        pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="trial")
        try:
            for index, params in enumerate(params_list):
                futures[pool.submit(self._run_trial, dict(params))] = index
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    trial = future.result()
                    self._log_trial(trial)
                    done[futures[future]] = trial
        except BaseException:
            self._cancel(pool)
            raise
        pool.shutdown()
        return [done[i] for i in range(len(params_list))]

    def _cancel(self, pool: ThreadPoolExecutor) -> None:
        """Stop at once: queued trials never start, running ones lose their Spark jobs (and their
        processes, with the tasks), and the threads waiting on them return."""
        pool.shutdown(wait=False, cancel_futures=True)
        self.spark.sparkContext.cancelJobGroup(self.record.run_id)
        pool.shutdown(wait=True)

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
                with self._deadline(trial_id):
                    stage = context.parallelize(range(workers), workers).barrier()
                    results = stage.mapPartitions(partial(execute_worker, task)).collect()
                break
            except Exception as exc:  # a worker died or hung: the barrier stage failed as a whole
                error = _first_line(exc)
                log.warning("%s %s attempt %d failed: %s", self.record.run_id, trial_id, attempt, error)
        else:
            results = [{"status": "failed", "error": f"every attempt failed; the last: {error}"}]
        chief = min(results, key=lambda r: r.get("trial", ""))
        trial = self._trial_result(trial_id, params, seed, chief, started)
        trial.attempts = attempt
        self._log_trial(trial, progress_of=f"{trial_id}/worker-0")
        return trial

    @contextmanager
    def _deadline(self, trial_id: str) -> Iterator[None]:
        """Tag the Spark jobs this thread submits with the trial; past ``trial_timeout`` plus a grace
        period (the executor kills a late trial itself; this is for an executor that does not
        answer), cancel them."""
        context = self.spark.sparkContext
        tag = f"{self.record.run_id}/{trial_id}"
        context.addJobTag(tag)
        timer = None
        if self.trial_timeout is not None:
            late = self.trial_timeout + TIMEOUT_GRACE_SECONDS
            timer = threading.Timer(late, context.cancelJobsWithTag, [tag])
            timer.daemon = True
            timer.start()
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()
            context.removeJobTag(tag)

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
            "timeout": self.trial_timeout,
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
            with self._deadline(trial_id):
                job = context.parallelize([{**task, "reuse_process": True}], 1).map(execute_trial)
                raw = job.collect()[0]
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
        curve = json.loads(self.fs.read_text(progress_file)) if self.fs.exists(progress_file) else []
        with self.fs.local_copy(rel) as files:
            trial.mlflow_run_id = self.tracker.log_trial(asdict(trial), curve, files)
        self.results.append(trial)
        log.info("%s %s: %s %s", self.record.run_id, trial.trial, trial.status, trial.metrics or trial.error)
        score = trial.metrics.get(self.optimization_key) if trial.metrics and self.optimization_key else None
        shown = f", {self.optimization_key} {score:.4g}" if isinstance(score, int | float) else ""
        why = f": {trial.error}" if trial.error else ""
        progress(f"{self.name}: {trial.trial} {trial.status}{shown}{why} ({trial.seconds:.1f} s)")
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
            "trial_timeout": self.trial_timeout,
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

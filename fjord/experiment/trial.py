"""The inside of a trial: the process that calls the user's training function.

A trial runs in a Python process of its own (``python -m fjord.experiment``), started by a Spark
task on an executor: its environment variables (``TF_CONFIG``, thread counts, the legacy-Keras
switch) are its own, and so is a crash. Within a search, a process that ended a trial cleanly takes
the next trial of the same search on its executor (:func:`serve`, as Ray Tune reuses actors), with
Keras' session cleared in between: a trial then skips the Python and TensorFlow start-up (about 5 s
each here). A retry always gets a new process.

Files of trial ``t`` under the experiment's directory on the shared filesystem::

    trials/<t>/params.json    the parameters and seed (written by the driver)
    trials/<t>/progress.json  every ``report(step, value)`` so far (read by the stopping rule)
    trials/<t>/result.json    status (succeeded, stopped, failed), metrics, error, timings
    trials/<t>/output.log     the function's stdout and stderr
    trials/<t>/...            whatever the function writes to :func:`trial_dir`
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import select
import sys
import tempfile
import time
import traceback
from numbers import Real
from pathlib import Path
from typing import Any

from fjord.experiment.stopping import MedianStopping
from fjord.fs import SharedFS

FUNCTION_FILE = "function.pkl"
COMPLETED = ("succeeded", "stopped")


class TrialStopped(Exception):  # a signal, like StopIteration, not an error
    """Raised by :func:`report` in a hopeless trial: the rest of the function is skipped."""


class _Trial:
    """The running trial of this process: which experiment, which trial, where it writes."""

    def __init__(self, experiment_uri: str, trial_id: str, workdir: str) -> None:
        self.fs = SharedFS(experiment_uri)
        self.trial_id = trial_id
        self.workdir = Path(workdir)
        self.spec = json.loads(self.fs.read_text(f"trials/{self.trial_id}/params.json"))
        self.stopping = MedianStopping(**self.spec["stopping"])
        self.curve: list[tuple[int, float]] = []
        self.reported: list[dict[str, Any]] = []
        self._completed: dict[str, list[tuple[int, float]]] = {}

    def report(self, step: int, value: float | dict[str, float]) -> None:
        metrics = value if isinstance(value, dict) else {self.spec["optimization_key"] or "metric": value}
        self.reported.append({"step": int(step), "time": time.time(), **_numbers(metrics)})
        self.fs.write_text(f"trials/{self.trial_id}/progress.json", json.dumps(self.reported))
        key = self.spec["optimization_key"]
        if key in metrics and math.isfinite(float(metrics[key])):
            self.curve.append((int(step), float(metrics[key])))
            if self.stopping.should_stop(self.curve, self._completed_curves(), self.spec["direction"]):
                raise TrialStopped(f"stopped at step {step}: below the median of completed trials")

    def _completed_curves(self) -> list[list[tuple[int, float]]]:
        key = self.spec["optimization_key"]
        for other in self.fs.listdir("trials"):
            if other == self.trial_id or other in self._completed:
                continue
            try:
                result = json.loads(self.fs.read_text(f"trials/{other}/result.json"))
                progress = json.loads(self.fs.read_text(f"trials/{other}/progress.json"))
            except Exception:  # not finished yet, or never reported: not a peer yet
                continue
            if result.get("status") in COMPLETED:
                self._completed[other] = [(p["step"], p[key]) for p in progress if key in p]
        return list(self._completed.values())


_current: _Trial | None = None


def report(step: int, value: float | dict[str, float]) -> None:
    """Report an intermediate metric of the running trial (a number for the optimization key, or a
    dict of metrics). In a search, a hopeless trial is stopped here (:class:`TrialStopped`).
    Outside a trial (the function called directly) this does nothing."""
    if _current is not None:
        _current.report(step, value)


def trial_dir() -> Path:
    """The running trial's working directory (a temporary one outside a trial): write checkpoints,
    models and anything else the trial produces here; it is kept under ``Experiments/<run_id>/``."""
    if _current is not None:
        return _current.workdir
    return Path(tempfile.mkdtemp(prefix="fjord-trial-"))


def _shared_dir(rel: str, fallback: str) -> Path:
    """``rel`` in the experiment's directory when it is on this host's disk, else ``fallback`` in the
    trial's working directory (uploaded with the rest when the trial ends)."""
    if _current is None:
        return trial_dir() / fallback
    if _current.fs.backend.local:
        return Path(_current.fs.path(rel))
    return _current.workdir / fallback


def tensorboard_dir() -> Path:
    """Where this trial's TensorBoard events go: ``Experiments/<run_id>/tensorboard/<trial>``, so one
    TensorBoard shows every trial and worker of the experiment."""
    return _shared_dir(f"tensorboard/{_current.trial_id}" if _current else "", "tensorboard")


def checkpoint_dir() -> Path:
    """Checkpoints of the running trial, shared by every worker of a ``distributed`` run and kept
    across its restarts: give it to ``BackupAndRestore`` and a restarted run resumes from here."""
    rel = _current.spec.get("checkpoints", f"trials/{_current.trial_id}/checkpoints") if _current else ""
    return _shared_dir(rel, "checkpoints")


def worker() -> tuple[int, int]:
    """``(index, count)`` of this worker in a ``distributed`` run (``(0, 1)`` otherwise): which shard
    of the training data to read."""
    if _current is None or "worker" not in _current.spec:
        return 0, 1
    return _current.spec["worker"], _current.spec["workers"]


def seed() -> int | None:
    """The running trial's seed (``None`` outside a trial)."""
    return _current.spec["seed"] if _current is not None else None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, Real):
            try:
                value = float(value)  # numpy and TensorFlow scalars
            except (TypeError, ValueError):
                raise TypeError(f"metric {name!r} is {type(value).__name__}, not a number") from None
        out[str(name)] = float(value)
    return out


def _set_seed(value: int) -> None:
    random.seed(value)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(value % 2**32)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(value % 2**32)
    if "keras" in sys.modules:  # Keras 3 keeps its own seed generator
        sys.modules["keras"].utils.set_random_seed(value % 2**32)


def _check_metrics(returned: Any, key: str | None) -> dict[str, float]:
    if isinstance(returned, Real) and not isinstance(returned, bool):
        returned = {key or "metric": returned}
    if not isinstance(returned, dict) or not returned:
        raise ValueError(
            f"the training function returned {type(returned).__name__}, not a dict of metrics "
            "(return e.g. {'auc': 0.91, 'loss': 0.2})"
        )
    metrics = _numbers(returned)
    if key is not None and key not in metrics:
        raise ValueError(f"the training function returned no {key!r} metric (it returned {sorted(metrics)})")
    bad = [name for name, value in metrics.items() if not math.isfinite(value)]
    if bad:
        raise ValueError(f"the training function returned a non-finite value for {', '.join(bad)}")
    return metrics


def _last_reported(trial: _Trial) -> dict[str, float]:
    last = trial.reported[-1] if trial.reported else {}
    return {k: v for k, v in last.items() if k not in ("step", "time")}


def _write_tensorboard(trial: _Trial) -> None:
    """The reported metrics as TensorBoard scalars, when the function already loaded TensorFlow."""
    if "tensorflow" not in sys.modules or not trial.reported:
        return
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(tensorboard_dir() / "reported"))
    with writer.as_default():
        for point in trial.reported:
            for name, value in point.items():
                if name not in ("step", "time"):
                    tf.summary.scalar(name, value, step=point["step"])
    writer.close()


def main(argv: list[str]) -> int:
    """Run one attempt (``argv``: experiment URI, trial id, working directory): load the function and
    parameters, call, write ``result.json``."""
    global _current
    import cloudpickle  # not pyspark's copy: importing pyspark would cost every trial a second

    _current = trial = _Trial(*argv)
    trial.workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"trial": trial.trial_id, "params": trial.spec["params"], "started": time.time()}
    try:
        function = cloudpickle.loads(trial.fs.read_bytes(FUNCTION_FILE))
        _set_seed(trial.spec["seed"])
        returned = function(**trial.spec["params"])
        result.update(status="succeeded", metrics=_check_metrics(returned, trial.spec["optimization_key"]))
    except TrialStopped as stop:
        result.update(status="stopped", reason=str(stop), metrics=_last_reported(trial))
    except BaseException as exc:  # whatever the user's code raises is the trial's failure
        traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        result.update(status="failed", error=f"{type(exc).__name__}: {message}"[:500])
    result["steps"] = len(trial.reported)
    result["ended"] = time.time()
    try:
        _write_tensorboard(trial)
    except Exception:  # TensorBoard is a convenience; the result is what matters
        traceback.print_exc()
    trial.fs.write_text(f"trials/{trial.trial_id}/result.json", json.dumps(result))
    return 0 if result["status"] in COMPLETED else 1


def serve(control_fd: int, idle_seconds: float) -> int:
    """Run trials one after another, as the executor hands them over: one JSON line each on stdin
    (``argv`` as for :func:`main`, and ``cores`` to keep to). Each trial's output goes to its own
    ``output.log``; its exit code is written to ``control_fd``. Ends at EOF or after ``idle_seconds``
    without a trial."""
    global _current
    control = os.fdopen(control_fd, "w", buffering=1)
    every_core = os.sched_getaffinity(0)
    while select.select([sys.stdin], [], [], idle_seconds)[0]:
        line = sys.stdin.readline()
        if not line:
            break
        control.write("taken\n")
        job = json.loads(line)
        _pin(set(job["cores"] or every_core))
        _output_to(Path(job["argv"][2]) / "output.log")
        code = main(job["argv"])
        _current = None
        _clear_frameworks()
        control.write(f"{code}\n")
    return 0


def _pin(cores: set[int]) -> None:
    """Keep every thread of this process (TensorFlow's included) to ``cores``."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), cores)


def _output_to(log: Path) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    with log.open("ab") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)


def _clear_frameworks() -> None:
    """Free what the last trial left in Keras and TensorFlow: models, layer names, graphs."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    if "tf_keras" in sys.modules:
        sys.modules["tf_keras"].backend.clear_session()
    gc.collect()

"""The executor side of an experiment: a Spark task that supervises one trial's process.

The driver (:mod:`fjord.experiment.runner`) sends each trial as a Spark task; here the task runs
the trial in a child process (``python -m fjord.experiment``, see :mod:`fjord.experiment.trial`),
retries it once if it fails, and kills it when it outlives the trial's timeout (a timed-out trial
is not retried: a second attempt would most likely hang as long). Within a search, a Python worker
keeps its trial process warm for the next trial of the same search. A ``distributed`` run's workers
are barrier tasks (:func:`execute_worker`).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fjord.config import StorageSettings
from fjord.experiment.cores import reserved_cores
from fjord.experiment.trial import COMPLETED
from fjord.fs import SharedFS, backend_for

MAX_ATTEMPTS = 2  # a failing trial is retried once
WARM_IDLE_SECONDS = 60  # a trial process waits this long for the next trial of its search


class _TimedOut(Exception):
    """The trial outlived its timeout and was killed."""


def _trial_process_setup(cores: set[int] | None) -> Callable[[], None]:
    """What the trial process does before it starts: die when the Spark worker that started it dies
    (task killed or cancelled), and keep to its task's ``cores``."""

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
    on_disk = fs.backend.local
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
    timeout = task.get("timeout")
    result: dict[str, Any] = {}
    with reserved_cores(threads) as cores:
        for attempt in range(1, task.get("attempts", MAX_ATTEMPTS) + 1):
            for stale in ("result.json", "progress.json"):
                if fs.exists(f"{rel}/{stale}"):
                    fs.rm(f"{rel}/{stale}")
            try:
                code = _attempt(task, workdir, env, cores, attempt, timeout)
            except _TimedOut:
                result = _failed(task, f"killed after trial_timeout ({timeout:g} s)")
                break
            if fs.exists(f"{rel}/result.json"):
                result = json.loads(fs.read_text(f"{rel}/result.json"))
            else:
                how = f"signal {-code}" if code < 0 else f"code {code}"
                result = _failed(task, f"the trial process died ({how}) before reporting a result")
            if result["status"] in COMPLETED:
                break
    result["attempts"] = attempt
    if not on_disk:
        for path in sorted(p for p in workdir.rglob("*") if p.is_file()):
            fs.upload(str(path), f"{rel}/{path.relative_to(workdir).as_posix()}")
        shutil.rmtree(workdir, ignore_errors=True)
    fs.write_text(f"{rel}/result.json", json.dumps(result))
    return result


def _failed(task: Mapping[str, Any], error: str) -> dict[str, Any]:
    return {"trial": task["trial"], "params": task["params"], "status": "failed", "error": error}


def _attempt(
    task: Mapping[str, Any],
    workdir: Path,
    env: dict[str, str],
    cores: set[int] | None,
    attempt: int,
    timeout: float | None,
) -> int:
    """Run the trial once, its output appended to ``output.log``; the exit code (:class:`_TimedOut`
    if it outlived ``timeout``).
    A first attempt in a search goes to this worker's warm trial process when there is one."""
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
            try:
                code = _warm.run(argv, cores, timeout)  # the process appends to output.log itself
            except _TimedOut:
                _discard_warm()
                raise
            if code != 0:  # a failed trial may have left the process in any state: never reuse it
                _discard_warm()
            if code is not None:
                return code
        process = subprocess.Popen(
            [sys.executable, "-m", "fjord.experiment", *argv],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_trial_process_setup(cores),
        )
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise _TimedOut from None


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

    def run(self, argv: list[str], cores: set[int] | None, timeout: float | None) -> int | None:
        """Hand over one trial and wait for it, at most ``timeout`` seconds (then
        :class:`_TimedOut`); its exit code (negative: the signal that killed it), or ``None`` if
        the process had ended (idle) before it took the trial."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"argv": argv, "cores": sorted(cores or [])}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            return None
        if self.control.readline() != "taken\n":
            return None
        if not select.select([self.control], [], [], timeout)[0]:
            raise _TimedOut  # the caller discards (kills) this process
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
    and runs the function once. A failed or timed-out worker fails the whole stage (its peers would
    wait forever in collective ops); the driver restarts the stage, which resumes from the shared
    checkpoints."""
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

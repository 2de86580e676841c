"""The warm job worker: Airflow's tasks run their stage jobs in a process that paid its start-up once.

A job run as a process of its own pays, every time, for a ``spark-submit`` JVM, the imports of
pyspark, Great Expectations, TensorFlow and the feature store, and a new SparkSession with its jars:
most of a 30 s ETL task and 10 of an 11 s bless (docs/orchestration.md has the figures). The job
worker is one process, started with the embedded Airflow, that imports the stages once, keeps the
SparkSession of the project it last served, and runs jobs on request, one at a time, each as
``python -m <stage module> <options>`` would: same options, output, exit code and result file.

The protocol, on a Unix socket only its owner can open (mode 600, and the peer's uid is checked):

1. the worker says ``hello <pid> <jobs run>`` when it takes a connection. A busy worker takes none:
   clients wait in the backlog, up to their patience, then run the job themselves;
2. the client sends one JSON line: ``module`` (a stage's, :data:`fjord.pipeline.STAGES`), ``argv``,
   ``env`` (the job's own variables: :data:`JOB_ENV`), ``settings`` (:func:`settings_digest` of the
   settings it runs with) and ``run_id``;
3. the worker answers ``accepted`` or ``refused <why>``, then everything the process writes while
   the job runs (its JVM's log included), then ``exit <code>``.

Control lines start with a NUL byte, which a job's output never holds.

Between jobs, each gets its own options, job variables, crash-point counts, and SparkSession over the
shared SparkContext (its own SQL settings and temporary views, with its Spark jobs in a job group named
by its run id). A client that goes away mid-job (Airflow killed the task) takes the job with it, as a
kill of a ``spark-submit`` does: the worker kills its JVM and Python workers and starts afresh
(``exec``: the same pid). It also starts afresh after ``max_jobs`` jobs, above ``max_memory_mb``
(itself and its children), after a job that failed, and when the settings changed under it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import logging
import os
import runpy
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from fjord.config import RESULT_FILE_ENV, Settings, get_settings, load_settings
from fjord.jobmain import INTERNAL_ERROR

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CONTROL = "\0"
# The variables a job brings with it; everything else is the worker's (the settings' must match).
JOB_ENV = (RESULT_FILE_ENV, "FJORD_CRASH_AT")
# What a job's process gets when its worker dies under it: what a killed process reports.
WORKER_DIED = -9
# Imported before the first job, beside the stages' modules (which import the rest lazily).
WARM_IMPORTS = ("pyspark.sql", "great_expectations", "tensorflow", "mlflow")
MAX_SOCKET_PATH = 107  # sockaddr_un's sun_path, less its terminating NUL


def settings_digest(settings: Settings) -> str:
    """A digest of every setting (secrets included, never shown): a worker runs jobs only for
    clients whose settings are its own."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


# -- the client: what a task's hook calls -------------------------------------------------------


class JobWorkerClient:
    """Runs jobs in the worker at ``path``; ``why_not`` says why it did not run the last one."""

    def __init__(self, path: Path, *, wait_s: float) -> None:
        self.path = path
        self.wait_s = wait_s
        self.why_not = ""
        self.worker = ""  # "pid N, job M" of the worker that ran the last job

    def run(self, request: dict[str, Any], on_line: Callable[[str], None]) -> int | None:
        """Run ``request`` (see the module docstring), each output line to ``on_line``; its exit code,
        :data:`WORKER_DIED` if the worker died under it, or ``None`` when the worker did not take it
        (none runs, it stayed busy, or it runs other settings): the caller runs the job itself."""
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        accepted = False
        try:
            connection.settimeout(self.wait_s)
            with _addressable(self.path) as address:
                connection.connect(address)
            lines = connection.makefile("r", encoding="utf-8", errors="replace", newline="\n")
            hello = lines.readline()
            if not hello.startswith(CONTROL + "hello "):
                self.why_not = "it closed the connection"
                return None
            self.worker = "pid {}, job {}".format(*hello.split()[1:3])
            connection.settimeout(None)
            connection.sendall(json.dumps(request).encode() + b"\n")
            answer = lines.readline()
            if not answer.startswith(CONTROL + "accepted"):
                self.why_not = answer.removeprefix(CONTROL + "refused ").strip() or "it closed the connection"
                return None
            accepted = True
            for line in lines:
                if line.startswith(CONTROL + "exit "):
                    return int(line.split()[1])
                on_line(line.rstrip("\n"))
            return WORKER_DIED
        except TimeoutError:
            self.why_not = f"it stayed busy for {self.wait_s:g} s"
        except OSError as exc:  # no worker (no socket, nobody listening), or it died mid-job
            if accepted:
                return WORKER_DIED
            self.why_not = f"none is running ({exc.strerror or exc})"
        finally:
            connection.close()
        return None


# -- the worker -------------------------------------------------------------------------------


class _Output:
    """Everything the process writes, on fds 1 and 2 (its JVM's and Python workers' included, which
    inherit them), goes through one pipe; a thread relays it to the running job's client, or to the
    worker's log between jobs. A job's end is a control line through the same pipe, so that all of
    its output reaches its client before the exit code."""

    def __init__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.log_fd = os.dup(1)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._pipe = os.fdopen(read_fd, "rb")
        self._client: socket.socket | None = None
        self._ended = threading.Event()
        threading.Thread(target=self._relay, name="output-relay", daemon=True).start()

    def attach(self, client: socket.socket) -> None:
        self._ended.clear()
        self._client = client

    def end(self, code: int) -> None:
        """Send the job's exit code after the last of its output; detach its client."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, f"{CONTROL}exit {code}\n".encode())
        self._ended.wait(30)

    def restore(self) -> None:
        """Point fds 1 and 2 back at the log (before an ``exec``)."""
        os.dup2(self.log_fd, 1)
        os.dup2(self.log_fd, 2)

    def _relay(self) -> None:
        for line in self._pipe:
            client = self._client
            if line.startswith(f"{CONTROL}exit ".encode()):
                self._client = None
                _send(client, line)
                self._ended.set()
            elif client is None or not _send(client, line):
                os.write(self.log_fd, line)


def _send(client: socket.socket | None, data: bytes) -> bool:
    if client is None:
        return False
    try:
        client.sendall(data)
        return True
    except OSError:  # the client is gone; its job is being abandoned
        return False


class JobWorker:
    """The server side (see the module docstring): ``JobWorker(path).serve()``."""

    def __init__(self, path: Path, *, warm_project: str | None = None, listen_fd: int | None = None) -> None:
        self.path = path
        self.listen_fd = listen_fd
        self.settings = get_settings()
        self.digest = settings_digest(self.settings)
        self.limits = self.settings.airflow.job_worker
        self.warm_project = warm_project
        self.jobs = 0
        self._job: int | None = None  # the running job's number

    def serve(self) -> NoReturn:
        """Listen, warm up, then run jobs until stopped (or started afresh)."""
        from fjord.pipeline import STAGES

        self.modules = {stage.module for stage in STAGES.values()}
        # What the stages' main modules import (importing a main itself would make runpy warn).
        self.warm_modules = sorted({stage.spec.split(":")[0] for stage in STAGES.values()})
        os.chdir(REPO)  # where a task's job process runs
        self.listener = self._listen()
        self.output = _Output()
        began = time.monotonic()
        self._warm()
        self._note(f"warm in {time.monotonic() - began:.1f} s; serving on {self.path}")
        while True:
            connection, _ = self.listener.accept()
            try:
                restart = self._serve_one(connection)
            except OSError:  # the client left before its job began (it gave up waiting)
                restart = None
            finally:  # shut down first: that wakes the watching thread
                _close(connection)
            if restart:
                self._restart(restart)

    def _listen(self) -> socket.socket:
        if self.listen_fd is not None:  # started afresh: the same socket, its waiting clients kept
            return socket.socket(fileno=self.listen_fd)
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = os.umask(0o177)  # mode 600 from the start: only its owner may connect
        try:
            with _addressable(self.path) as address:
                listener.bind(address)
        finally:
            os.umask(mask)
        listener.listen(16)
        return listener

    def _warm(self) -> None:
        for name in [*self.warm_modules, *WARM_IMPORTS]:
            try:
                importlib.import_module(name)
            except BaseException as exc:  # a job importing it will say why, in its task
                self._note(f"not warmed: {name}: {type(exc).__name__}: {exc}")
        if self.warm_project:
            from fjord.projects import get_project
            from fjord.spark import get_spark

            try:
                get_spark(get_project(self.warm_project))
            except Exception as exc:  # the next job starts it, and says why if it cannot
                self._note(f"no SparkSession warmed for {self.warm_project}: {exc}")

    def _serve_one(self, connection: socket.socket) -> str | None:
        """Serve one client; why the worker must start afresh, if it must."""
        if not _same_user(connection):
            return None
        connection.sendall(f"{CONTROL}hello {os.getpid()} {self.jobs + 1}\n".encode())
        connection.settimeout(10)
        try:
            request = json.loads(connection.makefile("rb").readline() or b"null")
        except (OSError, ValueError):
            request = None
        connection.settimeout(None)
        if not isinstance(request, dict):
            return None  # the client gave up waiting, or sent nothing readable
        refusal, restart = self._refusal(request)
        if refusal:
            connection.sendall(f"{CONTROL}refused {refusal}\n".encode())
            return restart
        connection.sendall(f"{CONTROL}accepted\n".encode())
        self.output.attach(connection)
        self._job = self.jobs + 1
        threading.Thread(target=self._watch, args=(connection, self._job), daemon=True).start()
        began = time.monotonic()
        code = self._run(request)
        self._job = None
        self.output.end(code)
        self.jobs += 1
        _reap()
        memory_mb = _memory_mb()
        self._note(
            f"job {self.jobs} ({request['module']}, run {request.get('run_id')}) exited {code} in "
            f"{time.monotonic() - began:.1f} s; {memory_mb:,.0f} MB in use"
        )
        self.warm_project = request.get("project") or self.warm_project
        if code == INTERNAL_ERROR:  # a bug, which may have left anything behind; a known error does not
            return f"its job failed with an internal error (exit {code})"
        if self.jobs >= self.limits.max_jobs:
            return f"{self.jobs} jobs run"
        if memory_mb > self.limits.max_memory_mb:
            return f"{memory_mb:,.0f} MB in use (limit {self.limits.max_memory_mb:,})"
        return None

    def _refusal(self, request: dict[str, Any]) -> tuple[str, str | None]:
        """Why ``request`` is refused ("" if it is not), and whether to start afresh."""
        if not isinstance(request.get("module"), str) or request["module"] not in self.modules:
            return f"{request.get('module')!r} is not a stage's module", None
        if not isinstance(request.get("argv"), list) or not isinstance(request.get("env"), dict):
            return "a request needs argv (a list) and env (a mapping)", None
        if set(request["env"]) - set(JOB_ENV):
            return f"a job brings only {', '.join(JOB_ENV)}", None
        if request.get("settings") != self.digest:
            try:
                changed = settings_digest(load_settings()) != self.digest
            except Exception:  # a broken config file: the task's own process says so
                changed = False
            if changed:
                return "its settings changed: it starts afresh", "the settings changed"
            return "it runs with other settings than the task", None
        return "", None

    def _run(self, request: dict[str, Any]) -> int:
        """Run the job's module as ``__main__`` with its options and variables; its exit code."""
        from fjord import faults, progress
        from fjord.spark import start_job

        module, env = request["module"], dict(request["env"])
        saved_env = {name: os.environ.get(name) for name in JOB_ENV}
        saved_argv = sys.argv
        root = logging.getLogger()
        saved_logging = (root.level, list(root.handlers))
        for name in JOB_ENV:
            os.environ.pop(name, None)
        os.environ.update({k: str(v) for k, v in env.items()})
        sys.argv = [module, *map(str, request["argv"])]
        faults.reset()
        start_job(str(request.get("run_id") or module))
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:  # a job's bug fails its task, not the worker
            import traceback

            traceback.print_exc()
            code = INTERNAL_ERROR
        finally:
            progress.disable()
            sys.argv = saved_argv
            root.setLevel(saved_logging[0])
            root.handlers[:] = saved_logging[1]
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _end_tracking_run()
            _reset_keras()
        return code

    def _watch(self, connection: socket.socket, job: int) -> None:
        """A client that goes away while its job runs takes the job with it (see the module docstring)."""
        with contextlib.suppress(OSError):
            connection.recv(1)
        if self._job == job:
            self._restart("its task went away mid-job: the job is stopped", kill_children=True)

    def _restart(self, why: str, *, kill_children: bool = False) -> NoReturn:
        """Start afresh as a new image of this process (same pid, same socket), its children dead."""
        import psutil

        self._note(f"starting afresh: {why}")
        if not kill_children:  # between jobs: Spark stops as it would at a process's end
            from fjord.spark import stop_spark

            with contextlib.suppress(Exception):
                stop_spark()
        children = _children()
        for child in children:
            child.kill()
        psutil.wait_procs(children, timeout=10)  # reaped: no zombie under the new image
        self.output.restore()
        # The listening socket goes to the new image: clients wait in its backlog, none is refused.
        os.set_inheritable(self.listener.fileno(), True)
        argv = [sys.executable, "-m", "fjord.jobworker", "--socket", str(self.path)]
        argv += ["--listen-fd", str(self.listener.fileno())]
        if self.warm_project:
            argv += ["--warm-project", self.warm_project]
        os.execv(sys.executable, argv)

    def _note(self, text: str) -> None:
        os.write(self.output.log_fd, f"{time.strftime('%Y-%m-%dT%H:%M:%S')} job worker: {text}\n".encode())


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """``path`` as a socket address: a Unix socket's path holds at most 107 bytes, and a deep home
    (a test's) is longer; then the path goes through a descriptor of its folder."""
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def _close(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()


def _same_user(connection: socket.socket) -> bool:
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid == os.getuid()


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)  # sys.exit("message"), as the interpreter would
    return 1


def _end_tracking_run() -> None:
    """A job that died inside an MLflow run leaves it active in the process: the next job's
    ``start_run`` would fail on it."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run("FAILED")


def _reset_keras() -> None:
    """Keras keeps process-global state between jobs: its layer and model name counters (a second
    training's first layer is ``dense_1``, not ``dense``), and the graph and memory of the models
    built. A job starts as a process of its own would."""
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        tf.keras.backend.clear_session()


def _children() -> list[Any]:
    """The processes the worker's jobs started in its process group: its JVM, the JVM's Python
    workers, a job's helpers. A server a job started in a session of its own (a model server, a
    monitor) is no part of the worker: it runs on, as it would after a job's own process ended."""
    from fjord.services.process import group_descendants

    return group_descendants([os.getpid()])


def _reap() -> None:
    """Collect the exit status of children that ended (a server a job started, since stopped)."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def _memory_mb() -> float:
    import psutil

    processes = [psutil.Process(), *_children()]
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def main(argv: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(prog="python -m fjord.jobworker", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", type=Path, required=True, help="where to listen")
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # kept across a fresh start
    parser.add_argument("--warm-project", help="the project whose SparkSession to start before the first job")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    JobWorker(args.socket, warm_project=args.warm_project, listen_fd=args.listen_fd).serve()


if __name__ == "__main__":
    main()

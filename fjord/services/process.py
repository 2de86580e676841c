"""The process plumbing every embedded server shares: ports, locks, state files, spawning and stopping.

Each server runs in its own process group (``start_new_session``), so stopping it stops whatever it
forked, and nothing is left behind. Its state lives in ``$FJORD_HOME/services/<name>/``: ``state.json``
(pids and ports), its log files and its data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from fjord.errors import ServiceError


def port_free(port: int) -> bool:
    """True when nothing listens on (and nothing holds) 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free, else a port the kernel picks."""
    if preferred and port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def read_state(path: Path) -> dict[str, Any]:
    """The JSON state at ``path``, or ``{}`` when there is none."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` atomically (a reader sees the old or the new file, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(path)


def alive(pid: int | None) -> bool:
    """True while process ``pid`` exists and is not a zombie.

    A server this process started is asked through its ``Popen`` (which also collects its exit
    status): a multi-threaded server whose main thread has exited shows as a zombie in ``/proc``
    while its other threads still run, and cannot be collected until they end.
    """
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): kill(0) said it exists


def spawn(
    argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start ``argv`` in a new process group with its output appended to ``log``; its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        try:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        except OSError as exc:
            raise ServiceError(f"cannot run {argv[0]}: {exc.strerror}") from None
    _CHILDREN[process.pid] = process
    return process.pid


# The servers this process started, by pid: alive() collects their exit statuses (no zombies).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def run_once(
    argv: Sequence[str], what: str, *, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> None:
    """Run a set-up command to its end (``initdb``, a storage format); :class:`ServiceError` naming
    ``what`` with its last error line if it fails. ``env`` is added to this process's environment;
    ``stdin`` is its input (a secret goes there, never on the command line)."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, env={**os.environ, **(env or {})},
        input=stdin,
    )  # fmt: skip
    if result.returncode != 0:
        # a JVM tool logs INFO lines on stdout and its exception on stderr: the error, not the last line
        lines = [line for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line or "Exception" in line or "Error:" in line]
        raise ServiceError(
            f"{what} failed (exit {result.returncode}): {(errors or lines or ['no output'])[-1].strip()}"
        )


def log_size(log: Path) -> int:
    """Where ``log`` ends now: a start's own lines come after it (the file is appended to)."""
    try:
        return log.stat().st_size
    except OSError:
        return 0


def log_says(log: Path, text: str, offset: int = 0) -> bool:
    """True once ``text`` appears in ``log`` after ``offset``. A port that answers may be another
    process's (two starts can pick the same free port): the process's own line says it bound it."""
    try:
        with log.open("rb") as out:
            out.seek(offset)
            return text.encode() in out.read()
    except OSError:
        return False


def log_tail(log: Path, lines: int = 1) -> str:
    """The last non-empty lines of ``log`` on one line (for error messages)."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return " | ".join(line.strip() for line in text[-lines:]) or "no output"


def wait_until(
    ready: Callable[[], bool], *, what: str, pid: int, log: Path, timeout: float, interval: float = 0.2
) -> None:
    """Poll ``ready()`` until true; :class:`ServiceError` with the log's tail if ``pid`` dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if not alive(pid):
            raise ServiceError(f"{what} exited while starting: {log_tail(log, 2)} (log: {log})")
        if time.monotonic() > deadline:
            stop_group(pid, signal.SIGKILL, timeout=5)
            raise ServiceError(
                f"{what} did not become ready in {timeout:.0f} s: {log_tail(log)} (log: {log})"
            )
        time.sleep(interval)


def stop_group(pid: int, sig: int = signal.SIGTERM, *, timeout: float = 30.0) -> bool:
    """Send ``sig`` to ``pid``'s process group and wait for it to go (SIGKILL after ``timeout``).

    ``False`` if it was not running.
    """
    if not alive(pid):
        return False
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.05)
    return True


def stray_descendants(pids: Sequence[int]) -> list[psutil.Process]:
    """The descendants of ``pids`` in process groups of their own: a stop of ``pids``' groups misses them.

    An Airflow task, for one, runs in its own group, and so does the Spark JVM it submits.
    """
    return _descendants(pids, in_their_groups=False)


def group_descendants(pids: Sequence[int]) -> list[psutil.Process]:
    """The descendants of ``pids`` in ``pids``' own process groups (the job worker's JVM, for one);
    not those that started a group or session of their own."""
    return _descendants(pids, in_their_groups=True)


def _descendants(pids: Sequence[int], *, in_their_groups: bool) -> list[psutil.Process]:
    groups = {os.getpgid(pid) for pid in pids if alive(pid)}
    found: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(psutil.Error, ProcessLookupError):  # ended in between
                    if (os.getpgid(child.pid) in groups) == in_their_groups:
                        found.append(child)
    return found


def stop_processes(found: Sequence[psutil.Process], *, timeout: float = 10.0) -> list[psutil.Process]:
    """SIGTERM those of ``found`` still running, SIGKILL after ``timeout``; the ones that were running."""
    running = [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for proc in running:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _gone, left = psutil.wait_procs(running, timeout=timeout)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=timeout)
    return running


def kill_group(pid: int) -> None:
    """SIGKILL ``pid``'s whole process group at once, as a crash would (tests of recovery use it)."""
    stop_group(pid, signal.SIGKILL, timeout=10)

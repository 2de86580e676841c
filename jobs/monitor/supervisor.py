"""Keeps a monitor running: ``python -m jobs.monitor.supervisor <health.json> -- <monitor command>``.

The streaming monitor restarts its own query a few times, then exits (exit 16); it can also be
killed, or run out of memory. Under ``fjord up`` (:mod:`jobs.monitor.service`) it therefore runs as
the child of this small process, which starts it again after every exit, with a back-off that
doubles from ``monitor.restart_backoff_seconds`` up to 5 minutes and starts over once a run lasted
10 minutes. Meanwhile ``health.json`` says what is going on, and the dashboard and ``fjord status``
show it::

    {"state": "running" | "down", "child": 1234, "restarts": 2, "since": 1764750000.1,
     "last_exit": -9, "restart_at": 1764750004.1}

SIGTERM stops the monitor (SIGTERM to it, so it stops its query cleanly, SIGKILL after 30 s) and then
the supervisor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MAX_BACKOFF_S = 300.0
STEADY_S = 600.0  # a run this long resets the back-off
STOP_GRACE_S = 30.0


def read_health(path: Path) -> dict[str, Any] | None:
    """The health a supervisor last wrote at ``path`` (None before the first)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _write(path: Path, health: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(health))
    os.replace(tmp, path)


def supervise(health_file: Path, argv: list[str], first_backoff_s: float) -> int:
    """Run ``argv`` again after every exit until SIGTERM; 0."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    backoff, restarts = first_backoff_s, 0
    while not stopping.is_set():
        started = time.time()
        child = subprocess.Popen(argv)
        _write(health_file, {"state": "running", "child": child.pid, "restarts": restarts, "since": started})
        while child.poll() is None and not stopping.wait(0.5):
            pass
        if stopping.is_set():
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
        code = child.returncode
        backoff = first_backoff_s if time.time() - started >= STEADY_S else backoff
        restart_at = time.time() + backoff
        print(f"monitor supervisor: the monitor exited {code}; restarting it in {backoff:.0f} s", flush=True)
        _write(health_file, {"state": "down", "child": None, "restarts": restarts, "since": time.time(),
                             "last_exit": code, "restart_at": restart_at})  # fmt: skip
        stopping.wait(backoff)
        backoff = min(backoff * 2, MAX_BACKOFF_S)
        restarts += 1
    health_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[2] != "--":
        print("usage: python -m jobs.monitor.supervisor <health.json> <first back-off s> -- <command>",
              file=sys.stderr)  # fmt: skip
        return 2
    return supervise(Path(args[0]), args[3:], float(args[1]))


if __name__ == "__main__":
    sys.exit(main())

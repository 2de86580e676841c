"""AirflowStack.stop names the tasks it stops from the processes left under Airflow's; one of them may
end while it looks (CI, 2026-12-07: psutil's NoSuchProcess out of ``ppid()`` failed ``fjord down``)."""

from __future__ import annotations

import subprocess
import sys

import psutil

from fjord.airflow.stack import _parent


def test_a_process_gone_while_the_strays_are_named_has_no_parent_and_no_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    proc = psutil.Process(child.pid)
    assert _parent(proc) == psutil.Process().pid
    child.wait()  # exited and reaped: its /proc entry is gone
    assert _parent(proc) is None

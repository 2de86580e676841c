"""Progress of a long job: one line per finished step, on stderr, with the time since the job began.

A job's summary comes when it ends, a minute or more later (the ETL, training, an experiment). These
lines say meanwhile what it did and how long each step took, in the terminal and in an Airflow task's
log alike::

    [  12.4 s] etl 2026-11-01: read 10,116 rows (3.1 s)
    [  61.0 s] train: trial 2 of 4 succeeded, val_auc 0.913 (18.2 s)

Job entry points turn it on (:func:`fjord.jobmain.run_job`); a library call stays quiet. Standard
output keeps only the job's summary, which scripts read.
"""

from __future__ import annotations

import sys
import time

_began: float | None = None


def enable() -> None:
    """Print progress from now on (the job's clock starts here)."""
    global _began
    _began = time.monotonic()


def disable() -> None:
    global _began
    _began = None


def progress(message: str) -> None:
    """One progress line, if a job entry point turned progress on."""
    if _began is None:
        return
    print(f"[{time.monotonic() - _began:6.1f} s] {message}", file=sys.stderr, flush=True)

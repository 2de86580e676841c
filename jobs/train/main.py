"""Entry point of the training job: ``python -m jobs.train.main --project fraud [--samples 16]``.

Reads a training dataset version of the feature view, runs a random search with early stopping on
Spark executors, retrains the best configuration, evaluates it on the held-out set, optimizes it and
registers it in MLflow with the alias ``candidate``. Prints a one-line summary; bad input gets a
one-line error and a non-zero exit code (a traceback only with ``--debug``).
"""

from __future__ import annotations

import sys

from fjord.jobmain import run_job
from jobs.train.job import TrainSpec, run

if __name__ == "__main__":
    sys.exit(run_job(TrainSpec, run, __doc__))

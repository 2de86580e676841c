"""Entry point of the feature pipeline job: ``python -m jobs.features.main --project fraud``.

Creates the feature view (built in: ``--view fraud_demo``; or ``--definition view.yaml``) if it does
not exist, and a new point-in-time training dataset version of it. Prints a one-line summary; bad
input gets a one-line error and a non-zero exit code (a traceback only with ``--debug``).
"""

from __future__ import annotations

import sys

from fjord.jobmain import run_job
from jobs.features.job import FeaturesSpec, run

if __name__ == "__main__":
    sys.exit(run_job(FeaturesSpec, run, __doc__))

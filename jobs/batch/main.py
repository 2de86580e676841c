"""Score a day of the feature view's batch data with the champion model.

    python -m jobs.batch.main --project fraud --start-time 2026-11-02 --end-time 2026-11-03

Writes ``Resources/predictions/<model>/<version>/predictions.parquet`` (a new version only when the
model, the window or the feature commits differ) and its lineage.
"""

import sys

from fjord.jobmain import run_job
from jobs.batch.job import BatchInferenceSpec, run

if __name__ == "__main__":
    sys.exit(run_job(BatchInferenceSpec, run, __doc__))

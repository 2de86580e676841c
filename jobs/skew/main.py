"""Training/serving skew of a served model: its archived inputs against the features the ETL computed
for the same rows.

    python -m jobs.skew.main --project fraud --model-name fraud

Results: ``Resources/monitoring/<model>/skew`` (a Delta table, one row per model version, window and
feature: the share of rows beyond tolerance, the mean difference, the worst rows) and, when a feature's
share exceeds ``--max-share``, an alert posted on ``fjord://skew/<project>/<model>`` and the drift
alerts of the same window marked suspect.
"""

import sys

from fjord.jobmain import run_job
from jobs.skew.job import SkewSpec, run

if __name__ == "__main__":
    sys.exit(run_job(SkewSpec, run, __doc__))

"""Realized performance of a served model: the archived predictions joined with the labels that landed.

    python -m jobs.performance.main --project fraud --model-name fraud

Results: ``Resources/monitoring/<model>/performance`` (a Delta table, one row per model version and
window: realized metrics beside CBPE's estimate) and, when a window's realized ROC AUC falls below the
blessed one, an alert posted on ``fjord://performance/<project>/<model>``.
"""

import sys

from fjord.jobmain import run_job
from jobs.performance.job import PerformanceSpec, run

if __name__ == "__main__":
    sys.exit(run_job(PerformanceSpec, run, __doc__))

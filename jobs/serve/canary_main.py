"""Decide on a serving's canary: promote it to stable or roll it back, on its production figures:
``python -m jobs.serve.canary_main --project fraud --serving fraud``.

Exit codes: 0 decided (promote, roll back, wait for more calls, or none: no canary; the result says
which); 2 bad options; 3 no such serving; 9 MLflow unreachable (a promotion moves the champion
alias, and is undone).
"""

import sys

from fjord.jobmain import run_job
from jobs.serve.canary import CanarySpec, run

if __name__ == "__main__":
    sys.exit(run_job(CanarySpec, run, __doc__))

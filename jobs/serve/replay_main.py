"""Replay a candidate model version on a serving's archived traffic:
``python -m jobs.serve.replay_main --project fraud --serving fraud --candidate 2``.

Exit codes: 0 replayed (the figures in the result); 2 bad options, or a candidate that reads inputs
the traffic lacks; 3 no such version, or no archived traffic in the window.
"""

import sys

from fjord.jobmain import run_job
from jobs.serve.replay import ReplaySpec, run

if __name__ == "__main__":
    sys.exit(run_job(ReplaySpec, run, __doc__))

"""Monitor a served model: its inference log topic -> windowed metrics, drift, alerts.

    python -m jobs.monitor.main --project fraud --model-name fraud --window-seconds 60

Runs until stopped (SIGTERM), or with ``--available-now`` until the topic's records are processed.
Results: ``Resources/monitoring/<model>/`` (Delta tables ``windows`` and ``alerts``, dead letters)
and the topic ``<model>_monitoring``.
"""

import logging
import sys

from fjord.jobmain import run_job
from jobs.monitor.job import MonitorSpec, run

if __name__ == "__main__":
    # One line per micro-batch in the monitor's log (``fjord logs`` / ``fjord monitor status``).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fjord.monitor").setLevel(logging.INFO)
    sys.exit(run_job(MonitorSpec, run, __doc__))

"""Monitor a served model: its inference log topic -> windowed metrics, drift, alerts.

    python -m jobs.monitor.main --project fraud --model-name fraud --window-seconds 60

Runs until stopped (SIGTERM), or with ``--available-now`` until the topic's records are processed.
Results: ``Resources/monitoring/<model>/`` (Delta tables ``windows`` and ``alerts``, dead letters)
and the topic ``<model>_monitoring``.
"""

import sys

from fjord.jobmain import run_job
from jobs.monitor.job import MonitorSpec, run

if __name__ == "__main__":
    sys.exit(run_job(MonitorSpec, run, __doc__))

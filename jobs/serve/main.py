"""Deploy a registered model version through the blessing gate: ``python -m jobs.serve.main --project fraud``.

Exit codes: 0 deployed; 2 bad options or nothing to deploy; 20 not blessed (worse than the champion
beyond the tolerance); 9 MLflow unreachable; 11 the model server could not start.
"""

import sys

from fjord.jobmain import run_job
from jobs.serve.deploy import DeploySpec, run

if __name__ == "__main__":
    sys.exit(run_job(DeploySpec, run, __doc__))

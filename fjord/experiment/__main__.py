"""``python -m fjord.experiment <experiment_uri> <trial_id> <workdir>``: one attempt at a trial, as
the Spark task starts it; ``python -m fjord.experiment --serve <fd> <idle_seconds>``: a process that
runs the trials it is handed (see :mod:`fjord.experiment.trial`)."""

import sys

from fjord.experiment.trial import main, serve

if sys.argv[1] == "--serve":
    sys.exit(serve(int(sys.argv[2]), float(sys.argv[3])))
sys.exit(main(sys.argv[1:]))

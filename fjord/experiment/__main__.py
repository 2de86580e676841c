"""``python -m fjord.experiment <experiment_uri> <trial_id> <workdir>``: one attempt at a trial, as
the Spark task starts it (see :mod:`fjord.experiment.trial`)."""

import sys

from fjord.experiment.trial import main

sys.exit(main(sys.argv[1:]))

"""Entry point of the ETL job: ``python -m jobs.etl.main --project fraud --batch 2026-11-01``.

Reads one landing batch, cleans it, engineers window features with Spark, validates every record with
Great Expectations and publishes a batch that passes to the feature store. Works as a spark-submit
application too. Prints a one-line summary; a bad batch gets a one-line error and a non-zero exit code
(a traceback only with ``--debug``); ``--no-validate-data`` skips Great Expectations (benchmarks).
"""

from __future__ import annotations

import sys

from fjord.jobmain import run_job
from jobs.etl.job import EtlSpec, run


def main(argv: list[str] | None = None) -> int:
    return run_job(EtlSpec, run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

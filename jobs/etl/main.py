"""Entry point of the ETL job: ``python -m jobs.etl.main --project fraud --batch 2026-11-01``.

Works as a spark-submit application too. Prints a one-line summary; a bad batch gets a one-line error
and a non-zero exit code (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from fjord.errors import FjordError
from jobs.etl.job import EtlSpec, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs.etl.main", description=__doc__)
    parser.add_argument("--project", required=True)
    parser.add_argument("--batch", required=True, help="the landing batch's date, YYYY-MM-DD")
    parser.add_argument("--no-validation", action="store_true", help="skip Great Expectations (benchmarks)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        spec = EtlSpec(project=args.project, batch=args.batch, validate_data=not args.no_validation)
        result = run(spec)
    except ValidationError as exc:
        print(f"error: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except FjordError as exc:
        if args.debug:
            raise
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The entry point every stage job shares: arguments from its typed spec, one-line errors.

``python -m jobs.train.main --project fraud --samples 16`` is::

    sys.exit(run_job(TrainSpec, run, __doc__))

Every field of the spec becomes an option (``--samples``, ``--no-optimize`` for a boolean); the
result's ``summary()`` is printed. A bad spec or a :class:`FjordError` prints one line and exits
non-zero (a traceback only with ``--debug``). When ``FJORD_RESULT_FILE`` is set (an orchestrator's
hook sets it), the result's fields are also written there as JSON: the small references (URIs,
versions, run ids) a DAG passes to its next task.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from fjord import progress
from fjord.config import RESULT_FILE_ENV
from fjord.errors import FjordError, known_failure
from fjord.faults import crash_point

RESULT_FILE = RESULT_FILE_ENV
INTERNAL_ERROR = 70  # a bug (EX_SOFTWARE), as the CLI answers one


def spec_parser(spec: type[BaseModel], description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, info in spec.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = info.description or ""
        if info.annotation is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            required = info.is_required()
            shown = help_text if required else f"{help_text} (default: {info.default})".strip()
            parser.add_argument(flag, dest=name, required=required, help=shown)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def run_job(
    spec: type[BaseModel], run: Callable[[Any], Any], description: str | None, argv: list[str] | None = None
) -> int:
    """Parse ``argv`` into ``spec``, call ``run(spec)``, print its summary; the exit code."""
    args = vars(spec_parser(spec, description).parse_args(argv))
    debug = args.pop("debug")
    try:
        parsed = spec(**{k: v for k, v in args.items() if v is not None})
    except ValidationError as exc:  # only the options: a ValidationError inside run() is no usage error
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        print(f"error: --{where.replace('_', '-')}: {error['msg']}", file=sys.stderr)
        return 2
    progress.enable()
    try:
        result = run(parsed)
    except FjordError as exc:
        progress.disable()
        if debug:
            raise
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        progress.disable()
        if debug:
            raise
        known = known_failure(exc)
        if known is not None:
            print(f"error: {known.one_line()}", file=sys.stderr)
            return known.exit_code
        message = " ".join(str(exc).split())[:500]
        print(f"internal error: {type(exc).__name__}: {message} (--debug: traceback)", file=sys.stderr)
        return INTERNAL_ERROR
    progress.disable()
    document = result_document(result)
    run_id = getattr(parsed, "run_id", None)
    if run_id:
        crash_point("job.returned")
        _complete(run_id, document)
    print(result.summary())
    if os.environ.get(RESULT_FILE):
        with open(os.environ[RESULT_FILE], "w") as out:
            out.write(json.dumps(document))
    return 0


def result_document(result: Any) -> dict[str, Any]:
    """``result``'s fields and its summary, as plain JSON data."""
    is_instance = dataclasses.is_dataclass(result) and not isinstance(result, type)
    fields = dataclasses.asdict(result) if is_instance else {}
    return dict(json.loads(json.dumps({"summary": result.summary(), **fields}, default=_plain)))


def _complete(run_id: str, document: dict[str, Any]) -> None:
    """Record the result in the run's record: the one write that makes the run complete for a retry."""
    from fjord.errors import NotFoundError
    from fjord.lineage import get_run, record_result

    try:
        if get_run(run_id).status == "succeeded":
            record_result(run_id, document)
    except NotFoundError:  # a job that keeps no run record under this id
        pass


def _plain(value: Any) -> Any:
    """What JSON cannot hold as it is: pydantic models as their JSON data, the rest as strings."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)

"""The shared stage entry point: options from a typed spec, one-line errors, exit codes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ConfigDict, Field

from fjord.errors import NotFoundError
from fjord.jobmain import run_job


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str
    samples: int = Field(default=8, ge=1, description="trials")
    optimize: bool = True


@dataclass
class Result:
    spec: Spec

    def summary(self) -> str:
        return f"ran {self.spec.project} samples={self.spec.samples} optimize={self.spec.optimize}"


def run(spec: Spec) -> Result:
    if spec.project == "missing":
        raise NotFoundError("unknown project 'missing'")
    return Result(spec)


def test_fields_become_options_with_defaults(capsys):
    assert run_job(Spec, run, "doc", ["--project", "fraud"]) == 0
    assert capsys.readouterr().out.strip() == "ran fraud samples=8 optimize=True"
    assert run_job(Spec, run, "doc", ["--project", "fraud", "--samples", "3", "--no-optimize"]) == 0
    assert capsys.readouterr().out.strip() == "ran fraud samples=3 optimize=False"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["--project", "fraud", "--samples", "0"],
            2,
            "error: --samples: Input should be greater than or equal to 1",
        ),
        (
            ["--project", "fraud", "--samples", "x"],
            2,
            "error: --samples: Input should be a valid integer, unable to parse string as an integer",
        ),
        (["--project", "missing"], 3, "error: unknown project 'missing'"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(capsys, argv, code, message):
    assert run_job(Spec, run, "doc", argv) == code
    err = capsys.readouterr().err
    assert err.strip() == message


def test_debug_shows_the_traceback():
    with pytest.raises(NotFoundError):
        run_job(Spec, run, "doc", ["--project", "missing", "--debug"])


def test_a_required_field_is_a_required_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_job(Spec, run, "doc", [])
    assert exit_.value.code == 2 and "--project" in capsys.readouterr().err


def test_a_validation_error_inside_the_job_is_an_internal_error_not_a_usage_error(capsys) -> None:
    def corrupt(spec: Spec) -> Result:
        Spec.model_validate({"project": 3})  # a record the job reads back is corrupt
        return Result(spec)

    assert run_job(Spec, corrupt, "doc", ["--project", "fraud"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("internal error: ValidationError:") and "--debug" in err and "--project" not in err


def test_run_ids_are_checked() -> None:
    from fjord.jobspec import JobSpec

    assert JobSpec(run_id="manual__2026-12-01T00:00:00+00:00").run_id.startswith("manual__")
    with pytest.raises(ValueError, match="is not a run id"):
        JobSpec(parent_run_id="../etc")


def test_the_result_goes_to_the_orchestrators_file_when_asked(capsys, tmp_path, monkeypatch):
    """A hook sets FJORD_RESULT_FILE (not a setting, so the strict settings accept it) and reads the
    result's fields back as JSON; a failed job writes none."""
    import json

    target = tmp_path / "result.json"
    monkeypatch.setenv("FJORD_RESULT_FILE", str(target))
    from fjord.config import load_settings

    load_settings()  # an unknown FJORD_* variable would be a ConfigError
    assert run_job(Spec, run, "doc", ["--project", "fraud", "--samples", "2"]) == 0
    written = json.loads(target.read_text())
    assert written["summary"] == "ran fraud samples=2 optimize=True"
    assert written["spec"] == {"project": "fraud", "samples": 2, "optimize": True}
    target.unlink()
    assert run_job(Spec, run, "doc", ["--project", "missing"]) == 3
    assert not target.exists()


def test_a_job_shows_progress_on_stderr_and_only_its_summary_on_stdout(capsys) -> None:
    from fjord.progress import progress

    def stepped(spec: Spec) -> Result:
        progress("step one done")
        progress("step two done")
        return Result(spec)

    progress("a library call outside a job: no line")
    assert run_job(Spec, stepped, "doc", ["--project", "fraud"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "ran fraud samples=8 optimize=True\n"
    lines = captured.err.splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["step one done", "step two done"]
    assert all(line.startswith("[") and " s] " in line for line in lines)
    progress("after the job: no line")
    assert capsys.readouterr().err == ""


def test_a_metadata_database_that_went_away_is_one_line_and_exit_22(capsys) -> None:
    """A real connection failure (nothing listens on the port), as a restart mid-publish gives one."""
    from sqlalchemy import create_engine, text

    def publish(spec: Spec) -> Result:
        with create_engine("postgresql+psycopg://fjord@127.0.0.1:1/fjord").connect() as conn:
            conn.execute(text("SELECT 1"))
        return Result(spec)

    assert run_job(Spec, publish, "doc", ["--project", "fraud"]) == 22
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the metadata database dropped or refused the connection: connection")
    assert "\n" not in err and "Traceback" not in err and "run the same command again" in err

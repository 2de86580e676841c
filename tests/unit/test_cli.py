import json
from pathlib import Path

import pytest

from fjord.cli.main import main
from tests.conftest import run_fjord


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_the_commands(capsys) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for command in ("project", "env", "lineage", "config", "run"):
        assert command in out
    for group, subs in {
        "project": ["create", "list", "show"],
        "env": ["build", "show", "list", "install"],
    }.items():
        code, out, _ = cli(capsys, group, "--help")
        assert code == 0 and all(s in out for s in subs)


def test_project_lifecycle(capsys) -> None:
    assert cli(capsys, "project", "create", "fraud", "-d", "card fraud")[0] == 0
    code, out, _ = cli(capsys, "project", "list")
    assert code == 0 and "fraud" in out and "card fraud" in out
    code, out, _ = cli(capsys, "project", "show", "fraud")
    assert code == 0 and "FeatureStore/" in out


def test_bad_input_is_one_line_and_nonzero(capsys) -> None:
    code, _, err = cli(capsys, "project", "show", "nope")
    assert code == 3
    assert err.strip().count("\n") == 0
    assert "unknown project 'nope'" in err and "Traceback" not in err
    code, _, err = cli(capsys, "project", "create", "Bad/Name")
    assert code == 2 and "invalid project name" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["bogus"], "No such command 'bogus'"),
        (["project", "show"], "Missing argument 'name'"),
        (["services", "logs"], "Missing argument 'name'"),
        (["services", "logs", "kafka", "--lines", "0"], "Invalid value for '--lines'"),
        (["project", "list", "--nope"], "No such option: --nope"),
    ],
)
def test_usage_errors_exit_2_with_the_usage_line(capsys, args, message) -> None:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert message in err and "Usage: fjord" in err and "Traceback" not in err


def test_debug_shows_the_traceback(capsys) -> None:
    from fjord.errors import NotFoundError

    with pytest.raises(NotFoundError):
        main(["--debug", "project", "show", "nope"])


def test_bad_config_file_is_reported(capsys, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "fjord.yaml").write_text("spark:\n  mastr: x\n")
    code, _, err = cli(capsys, "config", "show")
    assert code == 2 and "fjord.yaml: unknown setting 'spark.mastr'" in err


def test_env_commands(capsys, tmp_path: Path) -> None:
    cli(capsys, "project", "create", "fraud")
    spec = tmp_path / "requirements.txt"
    spec.write_text("pyjokes==0.8.3\n")
    code, out, err = cli(capsys, "env", "build", "fraud", "--file", str(spec))
    assert code == 0, err
    assert "pyjokes==0.8.3" in out
    code, out, _ = cli(capsys, "env", "show", "fraud", "--json")
    assert code == 0 and '"additions"' in out
    code, out, _ = cli(capsys, "env", "list", "fraud", "--json")
    assert code == 0 and [e["requirements"] for e in json.loads(out)] == [["pyjokes==0.8.3"]]
    code, _, err = cli(capsys, "env", "build", "fraud", "--file", str(tmp_path / "missing.txt"))
    assert code == 6 and "no such file" in err
    code, _, err = cli(capsys, "env", "install", "fraud", "numpy==1.21.0")
    assert code == 6 and "numpy" in err and err.strip().count("\n") == 0


def test_lineage_of_unknown_artifact(capsys) -> None:
    code, _, err = cli(capsys, "lineage", "show", "file:///nowhere")
    assert code == 3 and "no recorded run produced file:///nowhere" in err


def test_console_script_runs_as_a_user_would(fjord_home: Path) -> None:
    done = run_fjord("--help")
    assert done.returncode == 0 and "project" in done.stdout
    done = run_fjord("project", "show", "ghost")
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "error: unknown project 'ghost' (projects: none yet) "
        "(hint: create it with: fjord project create ghost)"
    ]
    done = run_fjord("config", "show", env={"FJORD_SPARK_MASTER": "local[2]"})
    assert done.returncode == 2 and "FJORD_SPARK_MASTER: unknown setting 'spark_master'" in done.stderr


_NOISY = """
import os, subprocess, sys
from pathlib import Path
from fjord.cli.output import err_console, library_output_to

with library_output_to(Path(sys.argv[1])):
    os.write(2, b"WARN a JVM line\\n")
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('I0000 a C++ log line\\\\n')"])
    print("progress for people")
    err_console.print("error: what the person must read")
os.write(2, b"after the block\\n")
"""


def test_library_output_goes_to_the_log_and_errors_to_the_terminal(tmp_path) -> None:
    import subprocess
    import sys

    log = tmp_path / "logs" / "run.log"
    done = subprocess.run([sys.executable, "-c", _NOISY, str(log)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "progress for people\n"
    assert done.stderr == "error: what the person must read\nafter the block\n"
    assert log.read_text() == "WARN a JVM line\nI0000 a C++ log line\n"


def test_user_text_that_looks_like_markup_prints_as_it_is(capsys) -> None:
    """A description of '[/x]' crashed `project show` with rich's MarkupError (exit 1)."""
    assert cli(capsys, "project", "create", "demo2", "-d", "[/x] and [bold]")[0] == 0
    code, out, _ = cli(capsys, "project", "show", "demo2")
    assert code == 0 and "[/x] and [bold]" in out
    code, out, _ = cli(capsys, "project", "list")
    assert code == 0 and "[/x] and [bold]" in out
    code, _, err = cli(capsys, "project", "show", "[/nope]")
    assert code == 2 and "[/nope]" in err  # not a project name: bad input, printed as typed


def test_a_setting_that_cannot_be_parsed_is_a_config_error_naming_the_variable(capsys, monkeypatch) -> None:
    from fjord.config import reset_settings

    monkeypatch.setenv("FJORD_SPARK__CONF", "a=b")
    reset_settings()
    code, _, err = cli(capsys, "config", "show")
    assert (
        code == 2 and err.startswith("error: FJORD_SPARK__CONF: cannot be parsed") and "internal" not in err
    )


def test_a_monitor_of_a_model_that_does_not_exist_is_not_found(capsys) -> None:
    assert cli(capsys, "project", "create", "fraud")[0] == 0
    for command in ("status", "alerts"):
        code, _, err = cli(capsys, "monitor", command, "-p", "fraud", "-m", "frad")
        assert (
            code == 3 and "no model 'frad' is served or monitored in project fraud (models: none yet)" in err
        )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--rest_api_timeout_in_ms=-5", "argument --rest_api_timeout_in_ms: -5 is not in 1..86400000"),
        ("--rest_api_num_threads=0", "argument --rest_api_num_threads: 0 is not in 1..1024"),
        ("--port=99999", "argument --port: 99999 is not in 0..65535"),
        ("--file_system_poll_wait_seconds=nan", "nan is not a number of seconds >= 0"),
        ("--max_body_bytes=x", "'x' is not an integer"),
    ],
)
def test_the_model_servers_flags_are_checked(flag: str, message: str) -> None:
    done = run_fjord("serve", "--model_name=m", "--model_base_path=/nonexistent", flag, timeout=60)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_a_feature_view_version_is_a_number_or_refused() -> None:
    from fjord.errors import ConfigError
    from jobs.serve.features import view_version

    assert [view_version(r, "x") for r in ("v", "v/2", "v/v2", "v/V3")] == [
        ("v", 1),
        ("v", 2),
        ("v", 2),
        ("v", 3),
    ]
    for bad in ("v/vv2", "v/0", "v/", "/2", "v/2/3", "v/two"):
        with pytest.raises(ConfigError, match="expected VIEW or VIEW/VERSION"):
            view_version(bad, "x")

"""``fjord model``, ``fjord serve`` and ``fjord kafka``: bad input is one line and a documented code."""

from __future__ import annotations

import pytest

from fjord.cli.main import main
from fjord.projects import create_project


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["model", "deploy"], 2, "Missing argument"),
        (["model", "deploy", "fraud", "--tolerance", "-1"], 2, "Invalid value for '--tolerance'"),
        (["model", "status", "fraud"], 2, "no project given"),
        (["model", "status", "fraud", "--project", "nope"], 3, "unknown project 'nope'"),
        (["model", "status", "fraud", "--project", "fraud"], 3, "no serving 'fraud' in project fraud"),
        (["model", "rollback", "fraud", "--project", "fraud"], 3, "no serving 'fraud' in project fraud"),
        (["model", "start", "--project", "fraud"], 2, "project fraud has no serving"),
        (["model", "stop", "--project", "fraud"], 0, ""),
        (["serve"], 2, "no model to serve: give --model_base_path or --model_config_file"),
        (["serve", "--model_base_path=/m", "--model_backend=onnx"], 2, "invalid choice: 'onnx'"),
        (["kafka", "create", "t", "--partitions", "0"], 2, "Invalid value for '--partitions'"),
    ],
)
def test_bad_input_gets_one_clear_line(capsys, args, code, message):
    create_project("fraud")
    got, out, err = cli(capsys, *args)
    assert got == code, (out, err)
    assert message in err or message in out
    assert "Traceback" not in err


def test_serve_help_is_tensorflow_model_servers_flags(capsys):
    code, out, _ = cli(capsys, "serve", "--help")
    assert code == 0 and "--model_config_file" in out and "--rest_api_port" in out

"""``fjord monitor`` on a home with no monitor: one-line errors with their exit codes, usage errors."""

from fjord.cli.main import main
from fjord.projects import create_project


def test_usage_and_bad_input(capsys) -> None:
    assert main(["monitor", "start", "-p", "nope"]) == 3
    assert "nope" in capsys.readouterr().err
    create_project("p")
    assert main(["monitor", "start", "-p", "p", "--numeric-test", "ks"]) == 2
    assert "numeric_test" in capsys.readouterr().err
    assert main(["monitor", "start", "-p", "p", "--window-seconds", "0"]) == 2  # usage: min 1
    assert main(["monitor", "dashboard", "--port", "70000"]) == 2
    assert main(["monitor", "stop", "-p", "p"]) == 0
    assert "was not running" in capsys.readouterr().out
    assert main(["monitor", "status", "-p", "p"]) == 0
    out = capsys.readouterr().out
    assert "monitor of p/fraud: stopped" in out and "no windows yet" in out
    assert main(["monitor", "alerts", "-p", "p", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert main(["monitor", "dashboard", "--stop"]) == 0
    assert "not running" in capsys.readouterr().out
    assert main(["monitor", "bogus"]) == 2

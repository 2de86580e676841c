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
    # nothing served or monitored in p: the default model is not found, as a typo would be
    assert main(["monitor", "status", "-p", "p"]) == 3
    assert "no model 'fraud' is served or monitored in project p" in capsys.readouterr().err
    assert main(["monitor", "alerts", "-p", "p", "--json"]) == 3
    assert main(["monitor", "dashboard", "--stop"]) == 0
    assert "not running" in capsys.readouterr().out
    assert main(["monitor", "bogus"]) == 2

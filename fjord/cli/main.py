"""Entry point of the ``fjord`` command: the command tree and the one place errors become exit codes.

A :class:`fjord.errors.FjordError` is printed as one line on stderr with its exit code; anything
else is a bug: one line too, and the traceback with ``--debug``.
"""

from __future__ import annotations

import logging
import sys

import typer

from fjord import __version__
from fjord.cli import (
    config_cmd,
    demo_cmd,
    env_cmd,
    experiment_cmd,
    featurestore_cmd,
    kafka_cmd,
    lineage_cmd,
    metadata_cmd,
    model_cmd,
    monitor_cmd,
    project_cmd,
    run_cmd,
    services_cmd,
    stack_cmd,
)
from fjord.cli.output import console, err_console, state
from fjord.errors import FjordError, known_failure

INTERNAL_ERROR_EXIT = 70

app = typer.Typer(
    name="fjord",
    help="Fjord: a Python-first ML platform (Spark ETL, feature store, TensorFlow training, serving, "
    "streaming monitor) coordinated through one shared filesystem.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(project_cmd.app, name="project")
app.add_typer(env_cmd.app, name="env")
app.add_typer(demo_cmd.app, name="demo")
app.add_typer(featurestore_cmd.app, name="featurestore")
app.add_typer(lineage_cmd.app, name="lineage")
app.add_typer(metadata_cmd.app, name="metadata")
app.add_typer(config_cmd.app, name="config")
app.add_typer(experiment_cmd.app, name="experiment")
app.add_typer(experiment_cmd.mlflow_app, name="mlflow")
app.add_typer(services_cmd.app, name="services")
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(model_cmd.app, name="model")
app.add_typer(monitor_cmd.app, name="monitor")
app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)(model_cmd.serve)
app.command("run")(run_cmd.run)
app.command("up")(stack_cmd.up)
app.command("down")(stack_cmd.down)
app.command("status")(stack_cmd.status)
app.command("logs")(stack_cmd.logs)


def _show_version(value: bool) -> None:
    if value:
        console.print(f"fjord {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Show the version."
    ),
) -> None:
    state.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    command = typer.main.get_command(app)
    try:
        # Click's standalone mode prints usage errors with the usage line and exits 2 (SystemExit);
        # every other exception, FjordError first, reaches the handlers below.
        command.main(args=argv, prog_name="fjord", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except FjordError as exc:
        if state.debug:
            raise
        err_console.print(f"error: {exc.one_line()}")
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("aborted")
        return 130
    except Exception as exc:
        if state.debug:
            raise
        known = known_failure(exc)
        if known is not None:
            err_console.print(f"error: {known.one_line()}")
            return known.exit_code
        # The head of the message (a JVM error's first lines, not its stack), on one line.
        first = " ".join(" ".join(str(exc).strip().splitlines()[:2]).split())[:300] or "no message"
        err_console.print(
            f"error: internal error {type(exc).__name__}: {first} (run with --debug for the traceback)"
        )
        return INTERNAL_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())

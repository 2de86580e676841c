"""What the CLI prints: rich consoles for results and for errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

# Piped output (logs, CI, grep) gets wide tables instead of cells wrapped at 80 columns.
_width = None if sys.stdout.isatty() else 200
# No markup: what the CLI prints holds user text (descriptions, names, error messages), and "[/x]" in
# a project's description must print as it is, not raise rich's MarkupError.
console = Console(highlight=False, soft_wrap=True, width=_width, markup=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def print_json(data: Any) -> None:
    """Machine-readable output (``--json``), one document."""
    console.print_json(json.dumps(data, default=str))


class _State:
    debug = False  # --debug: tracebacks, debug logs, and library output left on the terminal


state = _State()


@contextmanager
def library_output_to(log: Path) -> Iterator[Path]:
    """Send what libraries write to this process's stderr to ``log`` while the block runs: the
    JVM's log4j lines, TensorFlow's and absl's C++ logs, Python warnings and logging, and the same
    from every child process (Spark's workers, trial processes), which inherit the descriptor. The
    CLI's own errors still reach the terminal. With ``--debug`` everything stays on the terminal."""
    if state.debug:
        yield log
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with log.open("ab") as handle:
        os.dup2(handle.fileno(), 2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    previous = err_console.file
    err_console.file = terminal
    try:
        yield log
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        err_console.file = previous
        terminal.close()

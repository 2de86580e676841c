"""What the CLI prints: rich consoles for results and for errors."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Piped output (logs, CI, grep) gets wide tables instead of cells wrapped at 80 columns.
_width = None if sys.stdout.isatty() else 200
console = Console(highlight=False, soft_wrap=True, width=_width)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output (``--json``), one document."""
    console.print_json(json.dumps(data, default=str))

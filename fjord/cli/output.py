"""What the CLI prints: rich consoles for results and for errors."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Machine-readable output (``--json``), one document."""
    console.print_json(json.dumps(data, default=str))

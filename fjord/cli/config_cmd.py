"""``fjord config show``: the settings in force and where they came from."""

from __future__ import annotations

import typer
import yaml

from fjord.cli.output import console
from fjord.config import find_config_file, get_settings
from fjord.private import redact

app = typer.Typer(help="Inspect Fjord's settings.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the settings in force (YAML), after fjord.yaml and FJORD_* variables."""
    settings = get_settings()
    source = find_config_file()
    console.print(f"# file: {source or 'none'}; FJORD_* variables override it")
    data = redact(settings.model_dump(mode="json"))  # passwords (in URLs too), keys and tokens
    console.print(yaml.safe_dump(data, sort_keys=False).rstrip(), markup=False)

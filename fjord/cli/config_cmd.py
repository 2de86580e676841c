"""``fjord config show``: the settings in force and where they came from."""

from __future__ import annotations

import typer
import yaml

from fjord.cli.output import console
from fjord.config import find_config_file, get_settings

app = typer.Typer(help="Inspect Fjord's settings.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the settings in force (YAML), after fjord.yaml and FJORD_* variables."""
    settings = get_settings()
    source = find_config_file()
    console.print(f"# file: {source or 'none'}; FJORD_* variables override it")
    data = settings.model_dump(mode="json")
    for section in ("storage",):
        if data[section].get("s3_secret"):
            data[section]["s3_secret"] = "***"
    console.print(yaml.safe_dump(data, sort_keys=False).rstrip())

"""``fjord metadata migrate --to URL``: move Fjord's metadata (the feature store's registry and the
lineage index) to another database, for example from the embedded SQLite to PostgreSQL.

The copy is one transaction of the new database, into an empty one, while no publish runs; the old
database is left as it is. Airflow's own metadata, MLflow's registry and the tables on the storage
root are not in it and stay where they are. Then point ``metadata.url`` at the new database.
"""

from __future__ import annotations

import typer

from fjord.cli.output import console, print_json
from fjord.config import get_settings
from fjord.errors import ConfigError, FjordError

app = typer.Typer(help="Fjord's metadata database (feature store registry, lineage).", no_args_is_help=True)


class MigrationError(FjordError):
    """The metadata cannot be moved now (a publish is in flight, or the target is the source)."""

    exit_code = 18


@app.command("migrate")
def migrate(
    to: str = typer.Option(..., "--to", help="SQLAlchemy URL of the new, empty database."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Copy the registry and the lineage index into the empty database ``--to``, in one transaction."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from featurestore.lease import live_leases
    from featurestore.registry import SCHEMA as REGISTRY
    from fjord.lineage import SCHEMA as LINEAGE
    from fjord.metadata import copy_tables, engine_for, masked

    try:
        make_url(to)
    except ArgumentError:
        raise ConfigError(
            f"--to {to!r} is not a database URL", hint="for example postgresql://user:password@host/fjord"
        ) from None
    source_url = get_settings().metadata.url or ""
    if to == source_url:
        raise MigrationError(f"{masked(to)} is the database in use; name another one")
    source = engine_for(source_url)
    busy = live_leases(source)
    if busy:
        raise MigrationError(
            f"a publish is in flight ({'; '.join(busy)}); nothing was copied",
            hint="migrate once it ends (stop the pipeline's writers first: fjord down)",
        )
    try:
        copied = copy_tables([REGISTRY, LINEAGE], source, engine_for(to))
    except OperationalError as exc:
        first = str(exc.orig or exc).strip().splitlines()[0]
        raise MigrationError(f"cannot reach {masked(to)}: {first}; nothing was copied") from None
    if as_json:
        print_json({"from": masked(source_url), "to": masked(to), "rows": copied})
        return
    rows = ", ".join(f"{n} {t}" for t, n in copied.items() if n)
    console.print(f"copied {rows or 'nothing (the database was empty)'} to {masked(to)}")
    console.print(f"next: set metadata.url to it, for example: export FJORD_METADATA__URL='{masked(to)}'")

"""The SQL database behind Fjord's metadata (``metadata.url``): SQLite by default, PostgreSQL in a cluster.

One engine per URL and process. SQLite runs in WAL mode with a busy timeout, and every transaction
starts with ``BEGIN IMMEDIATE``: a transaction that reads and then writes would otherwise need to
upgrade its lock, and SQLite fails such an upgrade at once ("database is locked", the failure Feast's
SQLite registry shows) instead of waiting. Taking the write lock up front makes concurrent writers
from several processes (Airflow tasks, Spark drivers, the CLI) queue on the busy timeout instead.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from fjord.config import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
_ENSURED: set[tuple[int, Any]] = set()


@cache
def engine_for(url: str) -> Engine:
    """The process's engine for ``url``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def metadata_engine() -> Engine:
    """The engine of the configured metadata database."""
    settings = get_settings()
    if settings.metadata.url is None:  # the cluster profile's PostgreSQL, not started yet
        from fjord.cluster import resolve

        settings = resolve(settings)
    assert settings.metadata.url is not None
    return engine_for(settings.metadata.url)


def ensure_tables(schema: MetaData, engine: Engine) -> None:
    """Create ``schema``'s missing tables, and the columns and indexes a newer Fjord added to existing
    ones (schema changes are additive: new columns are nullable). Processes that start together race
    to create them; on PostgreSQL the loser's CREATE fails ("already exists"), so it checks again.
    Once per schema and engine in a process."""
    if (id(schema), engine.url) in _ENSURED:
        return
    for attempt in range(3):
        try:
            schema.create_all(engine, checkfirst=True)
            _add_missing_columns(schema, engine)
            _ENSURED.add((id(schema), engine.url))
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            if attempt == 2:
                raise


def _add_missing_columns(schema: MetaData, engine: Engine) -> None:
    inspector = inspect(engine)
    for table in schema.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [c for c in table.columns if c.name not in present]
        if not missing:
            continue
        with engine.begin() as conn:
            for column in missing:
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def masked(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def copy_tables(schemas: list[MetaData], source: Engine, target: Engine) -> dict[str, int]:
    """Copy every row of ``schemas``' tables from ``source`` into ``target``, in one transaction of
    ``target``: the copy appears whole or not at all. The target's tables must be empty (a database
    that already holds Fjord's metadata is refused, whatever it holds). Rows per table."""
    from fjord.errors import AlreadyExistsError

    for schema in schemas:
        ensure_tables(schema, source)  # an older Fjord's database lacks the newer tables and columns
        ensure_tables(schema, target)
    tables = [t for schema in schemas for t in schema.sorted_tables]  # parents before children
    with target.connect() as conn:
        held = [t.name for t in tables if conn.execute(t.select().limit(1)).first() is not None]
    if held:
        raise AlreadyExistsError(
            f"{masked(str(target.url))} already holds Fjord metadata (in {', '.join(sorted(held))}); "
            "nothing was copied",
            hint="migrate into an empty database",
        )
    copied: dict[str, int] = {}
    with source.connect() as read, target.begin() as write:
        for table in tables:
            rows = [dict(r._mapping) for r in read.execute(table.select())]
            if rows:
                write.execute(table.insert(), rows)
            copied[table.name] = len(rows)
            if target.dialect.name == "postgresql":  # explicit ids: move the id sequences past them
                for column in table.primary_key.columns:
                    if column.autoincrement is True and rows:
                        write.execute(
                            text(
                                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                                f"(SELECT max({column.name}) FROM {table.name}))"
                            )
                        )
    return copied


def create_database(url: str) -> None:
    """Create the database ``url`` names on its PostgreSQL server unless it exists (Airflow's, MLflow's)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    except Exception as exc:  # any driver error is the same answer to the user
        from fjord.errors import ServiceError

        raise ServiceError(f"cannot create database {target.database!r} on {target.host}: {exc}") from None
    finally:
        admin.dispose()

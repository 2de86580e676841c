"""The offline store: one Delta Lake table per feature group version, on the shared filesystem.

delta-rs gives atomic commits (a reader sees a whole commit or none of it) and time travel by version or
timestamp, without any Spark-side jars. Readers go through a snapshot's file list, never the directory:
the directory also holds files that later commits removed (``shared/STACK_NOTES.md``).

Writes never pass through delta-rs' writer. The incoming rows are written as Parquet straight into a
new directory of the table (by Spark's executors, or by pyarrow), and one Delta transaction adds those
files. An upsert is copy-on-write, done by DuckDB within its memory cap: the table's files that hold a
key being written are rewritten without those rows, and the same transaction removes the old files.
Memory stays bounded whatever the size of the data, and Spark's files are committed without a copy.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from featurestore.engines.duckdb import read_parquet_sql
from featurestore.formats import write_parquet
from featurestore.schema import normal_schema
from fjord.errors import NotFoundError
from fjord.fs import SharedFS, delta_scan, object_store_options

if TYPE_CHECKING:
    from featurestore.registry import GroupRecord

_REWRITE_BATCH_ROWS = 128_000
DESCRIPTOR = "_fjord_group.json"  # a group's descriptor in its table directory; Delta ignores "_" files


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _as_uri(path: str) -> str:
    return f"file://{path}" if path.startswith("/") else path


@dataclass(frozen=True)
class Committed:
    """What a commit made: the table version, and how many existing rows it replaced."""

    version: int
    rows_updated: int


@dataclass(frozen=True)
class Snapshot:
    """One version of a feature group's table: what every reader reads."""

    version: int
    committed_at: datetime
    file_uris: tuple[str, ...]
    schema: pa.Schema


class DeltaOfflineStore:
    """A Delta table at ``uri``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs = SharedFS(uri)
        self._options = object_store_options(uri)

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self._options)

    def commit(
        self,
        con: duckdb.DuckDBPyConnection,
        incoming: str,
        stage: str,
        keys: list[str],
        event_time: str,
        metadata: dict[str, str],
        *,
        new_fields: list[pa.Field] | None = None,
    ) -> Committed:
        """Upsert on ``keys`` the rows of the Parquet files under ``stage`` as one commit.

        ``stage`` is a directory of the table (relative to it) whose files hold the rows; ``incoming``
        names the same rows as a relation in ``con``. Rows of the table with a key among them are
        replaced. ``new_fields`` are columns the table gains (nullable, null in the older rows).
        """
        files = self.fs.find(stage, suffix=".parquet")
        with self.fs.open(files[0]) as handle:
            schema = normal_schema(pq.read_schema(handle))  # every column nullable
        properties = CommitProperties(custom_metadata=metadata)
        adds = [self._add_action(f) for f in files]
        if not self.exists():
            create_table_with_add_actions(
                self.uri,
                DeltaSchema.from_arrow(schema),  # type: ignore[arg-type]
                adds,
                mode="error",
                storage_options=self._options,
                commit_properties=properties,
            )
            return Committed(self._table().version(), 0)
        table = self._table()
        if new_fields:
            table.alter.add_columns(
                DeltaSchema.from_arrow(pa.schema(new_fields)).fields,  # type: ignore[arg-type]
                commit_properties=properties,
            )
        removes, rewrites, updated = self._replace_matches(con, table, incoming, stage, keys, event_time)
        table.create_write_transaction(
            [*removes, *rewrites, *adds],
            mode="append",
            schema=table.schema(),
            commit_properties=properties,
        )
        return Committed(self._table().version(), updated)

    def holds(
        self, con: duckdb.DuckDBPyConnection, incoming: str, version: int, keys: list[str], event_time: str
    ) -> bool:
        """Whether the table at ``version`` already holds exactly the rows of ``incoming`` (same columns,
        same values): an upsert of them would change nothing, so a rerun need not commit again."""
        table = self._table(version)
        columns = [f.name for f in pa.schema(table.schema().to_arrow())]  # type: ignore[arg-type]
        incoming_columns = [r[0] for r in con.execute(f"DESCRIBE {incoming}").fetchall()]
        if sorted(columns) != sorted(incoming_columns):
            return False
        lo, hi = con.execute(
            f"SELECT min({_q(event_time)}), max({_q(event_time)}) FROM {incoming}"
        ).fetchone()
        candidates = _files_overlapping(table, event_time, lo, hi)
        if not candidates:
            return False
        files = [self.fs.uri(c["path"]).removeprefix("file://") for c in candidates]
        on = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in keys)
        key_list = ", ".join(_q(k) for k in keys)
        column_list = ", ".join(_q(c) for c in incoming_columns)
        different = con.execute(
            f"SELECT count(*) FROM (SELECT {column_list} FROM {incoming} EXCEPT "
            f"SELECT {column_list} FROM (SELECT t.* FROM {read_parquet_sql(con, files)} t "
            f"SEMI JOIN (SELECT {key_list} FROM {incoming}) s ON {on}))"
        ).fetchone()[0]
        return different == 0

    def latest_version(self) -> int | None:
        """The table's newest Delta version (committed or not by Fjord's registry), or None."""
        return self._table().version() if self.exists() else None

    def entries_since(self, version: int | None) -> list[dict[str, Any]]:
        """The commit entries newer than ``version`` (every entry when None), oldest first."""
        if not self.exists():
            return []
        table = self._table()
        if version is None:
            entries = table.history()
        else:  # read only the newest entries, not the whole log (a year of daily commits)
            newer = table.version() - version
            entries = table.history(limit=newer) if newer > 0 else []
        return sorted(entries, key=lambda h: h["version"])

    def revert_to(self, version: int | None, metadata: dict[str, str]) -> None:
        """Undo every Delta commit after ``version`` by a restore commit (None: no commit is kept, so
        the log goes and the table does not exist; its unreferenced files wait for a vacuum). Time
        travel to ``version`` and to every earlier commit keeps working."""
        if version is None:
            self.fs.rm("_delta_log", recursive=True)
            return
        self._table().restore(version, commit_properties=CommitProperties(custom_metadata=metadata))

    def _replace_matches(
        self,
        con: duckdb.DuckDBPyConnection,
        table: DeltaTable,
        incoming: str,
        stage: str,
        keys: list[str],
        event_time: str,
    ) -> tuple[list[RemoveAction], list[AddAction], int]:
        """Remove actions for the table's files holding a key of ``incoming``, add actions for those
        files rewritten without these rows, and how many rows the upsert replaces."""
        lo, hi = con.execute(
            f"SELECT min({_q(event_time)}), max({_q(event_time)}) FROM {incoming}"
        ).fetchone()
        candidates = _files_overlapping(table, event_time, lo, hi)
        if not candidates:  # a new day's data: nothing to replace, nothing to read
            return [], [], 0
        uris = {self.fs.uri(c["path"]).removeprefix("file://"): c for c in candidates}
        on = " AND ".join(f"t.{_q(k)} = s.{_q(k)}" for k in keys)
        key_list = ", ".join(_q(k) for k in keys)
        matched = con.execute(
            f"SELECT t.filename, count(*) FROM {read_parquet_sql(con, list(uris), filename='true')} t "
            f"SEMI JOIN (SELECT {key_list} FROM {incoming}) s ON {on} GROUP BY t.filename"
        ).fetchall()
        now = int(time.time() * 1000)
        removes, rewrites, updated = [], [], 0
        for i, (filename, count) in enumerate(sorted(matched)):
            old = uris[filename]
            updated += count
            removes.append(RemoveAction(old["path"], True, now, old["size_bytes"], {}))  # type: ignore[call-arg]
            if count == old["num_records"]:
                continue  # every row is replaced: the file just goes
            kept = con.sql(
                f"SELECT t.* FROM {read_parquet_sql(con, [filename])} t "
                f"ANTI JOIN (SELECT {key_list} FROM {incoming}) s ON {on}"
            ).to_arrow_reader(_REWRITE_BATCH_ROWS)
            rewritten = f"{stage}/rewritten-{i:05d}.parquet"
            with self.fs.open(rewritten, "wb") as handle:
                write_parquet(kept, handle)
            rewrites.append(self._add_action(rewritten))
        return removes, rewrites, updated

    def _add_action(self, rel: str) -> AddAction:
        """A Delta add action for the table's Parquet file ``rel``, with statistics from its footer."""
        with self.fs.open(rel) as handle:
            metadata = pq.ParquetFile(handle).metadata
        size = int(self.fs.backend.fs.size(self.fs.path(rel)))
        return AddAction(rel, size, {}, int(time.time() * 1000), True, json.dumps(_file_stats(metadata)))

    def _table(self, as_of: int | datetime | None = None) -> DeltaTable:
        try:
            table = DeltaTable(self.uri, storage_options=self._options)
        except TableNotFoundError:
            raise NotFoundError(f"{self.uri} has no commits yet") from None
        if as_of is not None:
            try:
                table.load_as_version(as_of.astimezone(UTC) if isinstance(as_of, datetime) else as_of)
            except Exception as exc:  # delta-rs raises plain exceptions for versions/times it lacks
                raise NotFoundError(f"{self.uri} has no commit {as_of}: {str(exc).splitlines()[0]}") from None
        return table

    def snapshot(
        self, as_of: int | datetime | None = None, *, committed_at: datetime | None = None
    ) -> Snapshot:
        """The table at commit ``as_of`` (a version, or the last commit at or before a time).
        ``committed_at``, when the caller knows it (the registry does), spares reading the log."""
        table = self._table(as_of)
        version = table.version()
        if committed_at is None:
            entry = next(h for h in table.history() if h["version"] == version)
            committed_at = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC)
        return Snapshot(
            version=version,
            committed_at=committed_at,
            file_uris=tuple(_as_uri(u) for u in table.file_uris()),
            schema=pa.schema(table.schema().to_arrow()),  # type: ignore[arg-type]
        )

    def count_rows(self, as_of: int) -> int:
        """The rows the table holds at version ``as_of``, from its files' statistics (no data read)."""
        actions = pa.table(self._table(as_of).get_add_actions(flatten=True))
        return int(pc.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0

    def read(self, as_of: int | datetime | None = None, columns: list[str] | None = None) -> pa.Table:
        return delta_scan(self._table(as_of), self.fs.backend, self.fs.path(), columns)

    def history(self) -> list[dict[str, Any]]:
        """Every commit, newest first: version, timestamp, operation, metrics, Fjord's metadata."""
        return self._table().history()

    def compact(self, metadata: dict[str, str], target_size: int | None = None) -> dict[str, Any]:
        """Rewrite the latest version's small files into few large ones, as one commit (delta-rs
        ``optimize.compact``); the data is unchanged. Its metrics, with the new ``version`` (``None``
        when there was nothing to compact, and so no commit)."""
        table = self._table()
        before = table.version()
        metrics = table.optimize.compact(
            target_size=target_size, commit_properties=CommitProperties(custom_metadata=metadata)
        )
        after = self._table().version()
        return {**metrics, "version": after if after != before else None}

    def vacuum(self, keep_versions: list[int], retention_hours: float) -> list[str]:
        """Delete the files no version in ``keep_versions`` (nor the latest) reads that were removed
        more than ``retention_hours`` ago; the deleted files. Time travel to a kept version keeps
        working; to other versions it may not."""
        table = self._table()
        return list(
            table.vacuum(
                retention_hours=int(retention_hours),
                dry_run=False,
                enforce_retention_duration=False,
                keep_versions=sorted({*keep_versions, table.version()}),
            )
        )


def _files_overlapping(table: DeltaTable, event_time: str, lo: Any, hi: Any) -> list[dict[str, Any]]:
    """The table's files whose event times may fall in [lo, hi]: an upsert can only match rows with
    an equal event time, so a file whose recorded range lies outside cannot hold a match."""
    files = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    low, high = f"min.{event_time}", f"max.{event_time}"
    return [
        f for f in files if f.get(low) is None or f.get(high) is None or not (f[high] < lo or f[low] > hi)
    ]


def _stat_value(value: Any) -> Any:
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _file_stats(metadata: pq.FileMetaData) -> dict[str, Any]:
    """Delta file statistics (rows; min, max and nulls of numeric and time columns) from a footer."""
    schema = metadata.schema.to_arrow_schema()
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for index, field in enumerate(schema):
        kind = field.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind)):
            continue
        columns = [metadata.row_group(g).column(index).statistics for g in range(metadata.num_row_groups)]
        if not columns or any(c is None or not c.has_min_max or not c.has_null_count for c in columns):
            continue
        mins[field.name] = _stat_value(min(c.min for c in columns))
        maxs[field.name] = _stat_value(max(c.max for c in columns))
        nulls[field.name] = sum(c.null_count for c in columns)
    return {"numRecords": metadata.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}


def write_descriptor(record: GroupRecord) -> None:
    """The group's descriptor in its table directory (what ``featurestore.adopt`` registers it from); kept
    as it is once written."""
    fs = SharedFS(record.table_uri)
    if fs.exists(DESCRIPTOR):
        return
    descriptor = {
        "name": record.name,
        "version": record.version,
        "primary_key": record.primary_key,
        "event_time": record.event_time,
        "online_enabled": record.online_enabled,
        "description": record.description,
        "created_at": record.created_at.isoformat(),
    }
    fs.makedirs("")
    fs.write_text(DESCRIPTOR, json.dumps(descriptor, indent=1))

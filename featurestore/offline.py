"""The offline store: one Delta Lake table per feature group version, on the shared filesystem.

delta-rs gives atomic commits (a reader sees a whole commit or none of it), time travel by version or
timestamp, and MERGE for upserts on (primary key, event time), without any Spark-side jars. Readers
go through a snapshot's file list, never the directory: the directory also holds files that later
commits removed (``shared/STACK_NOTES.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from fjord.config import get_settings
from fjord.errors import NotFoundError


def storage_options(uri: str) -> dict[str, str] | None:
    """delta-rs options for ``uri``'s storage, from Fjord's storage settings."""
    if not uri.startswith("s3://"):
        return None
    storage = get_settings().storage
    options = {"AWS_S3_ALLOW_UNSAFE_RENAME": "true", "AWS_REGION": "us-east-1"}
    if storage.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = storage.s3_endpoint_url
        options["AWS_ALLOW_HTTP"] = str(storage.s3_endpoint_url.startswith("http://")).lower()
    if storage.s3_key:
        options["AWS_ACCESS_KEY_ID"] = storage.s3_key
    if storage.s3_secret:
        options["AWS_SECRET_ACCESS_KEY"] = storage.s3_secret
    return options


def _as_uri(path: str) -> str:
    return f"file://{path}" if path.startswith("/") else path


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
        self._options = storage_options(uri)

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self._options)

    def commit(
        self,
        data: pa.Table | pa.RecordBatchReader,
        keys: list[str],
        metadata: dict[str, str],
        *,
        evolve: bool,
    ) -> int:
        """Upsert ``data`` on ``keys`` as one commit; its version. ``evolve`` adds new columns."""
        properties = CommitProperties(custom_metadata=metadata)
        if not self.exists():
            write_deltalake(
                self.uri, data, mode="append", storage_options=self._options, commit_properties=properties
            )
        else:
            table = DeltaTable(self.uri, storage_options=self._options)
            predicate = " AND ".join(f't."{k}" = s."{k}"' for k in keys)
            (
                table.merge(
                    data,
                    predicate=predicate,
                    source_alias="s",
                    target_alias="t",
                    merge_schema=evolve,
                    commit_properties=properties,
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        return DeltaTable(self.uri, storage_options=self._options).version()

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

    def snapshot(self, as_of: int | datetime | None = None) -> Snapshot:
        """The table at commit ``as_of`` (a version, or the last commit at or before a time)."""
        table = self._table(as_of)
        version = table.version()
        entry = next(h for h in table.history() if h["version"] == version)
        return Snapshot(
            version=version,
            committed_at=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
            file_uris=tuple(_as_uri(u) for u in table.file_uris()),
            schema=pa.schema(table.schema().to_arrow()),  # type: ignore[arg-type]
        )

    def read(self, as_of: int | datetime | None = None, columns: list[str] | None = None) -> pa.Table:
        return self._table(as_of).to_pyarrow_table(columns=columns)

    def history(self) -> list[dict[str, Any]]:
        """Every commit, newest first: version, timestamp, operation, metrics, Fjord's metadata."""
        return self._table().history()

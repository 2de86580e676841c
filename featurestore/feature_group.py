"""Feature groups: versioned tables of features keyed by primary key and event time.

>>> fg = fs.get_or_create_feature_group("card_transactions_4h", version=1, primary_key=["cc_num"],
...                                     event_time="ts", online_enabled=True)   # doctest: +SKIP
>>> commit = fg.insert(df)              # pandas, pyarrow or Spark; one atomic commit  # doctest: +SKIP
>>> fg.read(as_of=commit)               # time travel                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.engines.duckdb import connect_duckdb, read_parquet_sql
from featurestore.errors import FeatureStoreError, FeatureStorePermissionError, SchemaError
from featurestore.offline import Committed, DeltaOfflineStore, Snapshot
from featurestore.registry import CommitRecord, GroupRecord
from featurestore.schema import Feature, check_insert, features_of, normal_schema, normalise
from featurestore.statistics import compute_statistics
from featurestore.versioned import Versioned
from fjord.errors import NotFoundError
from fjord.fs import spark_uris
from fjord.lineage import RunRecord, track_run

if TYPE_CHECKING:
    from featurestore.query import Query
    from featurestore.store import FeatureStore

_CODE = [Path(__file__).parent]
_ONLINE_BATCH = 10_000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FeatureGroup(Versioned):
    """A feature group version: schema, commits, statistics, and its offline and online data."""

    def __init__(self, store: FeatureStore, record: GroupRecord, *, read_only: bool = False) -> None:
        self._store = store
        self._record = record
        self.read_only = read_only

    @property
    def primary_key(self) -> list[str]:
        return list(self._record.primary_key)

    @property
    def event_time(self) -> str:
        return self._record.event_time

    @property
    def online_enabled(self) -> bool:
        return self._record.online_enabled

    @property
    def location(self) -> str:
        """URI of the offline Delta table."""
        return self._record.table_uri

    @property
    def ref(self) -> str:
        """``project.name_version``: how training datasets and lineage name this group."""
        return f"{self.project}.{self.name}_{self.version}"

    @property
    def schema(self) -> list[Feature]:
        """The features, in column order (empty until the first insert)."""
        return list(self._record.features)

    @property
    def features(self) -> list[Feature]:
        return self.schema

    def get_feature(self, name: str) -> Feature:
        for feature in self._record.features:
            if feature.name == name:
                return feature
        raise FeatureStoreError(
            f"{self}: no feature {name!r} (features: {[f.name for f in self._record.features]})"
        )

    def update_feature_description(self, name: str, description: str) -> FeatureGroup:
        self._check_writable()
        self.get_feature(name)
        features = [
            f.model_copy(update={"description": description}) if f.name == name else f for f in self.schema
        ]
        self._store.registry.set_features(self.id, features)
        self._record = self._record.model_copy(update={"features": features})
        return self

    # -- queries -----------------------------------------------------------------------------------

    def select_all(self) -> Query:
        from featurestore.query import Query

        return Query(self, [f.name for f in self.schema if not (f.primary or f.event_time)])

    def select(self, features: list[str]) -> Query:
        from featurestore.query import Query

        return Query(self, list(features))

    # -- writing -----------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise FeatureStorePermissionError(
                f"{self} belongs to project {self.project!r}: it is shared with {self._store.project.name!r} "
                "for reading only"
            )

    def insert(self, data: Any, *, run: RunRecord | None = None) -> int:
        """Upsert ``data`` (pandas, pyarrow or Spark DataFrame) as one atomic commit; its commit id.

        Rows are upserted on (primary key, event time). The data is validated first (schema, null
        keys, duplicate (key, time) rows, emptiness): bad data raises and leaves the group unchanged.

        Lineage: the commit is an output of ``run`` (a job's run record, whose inputs are the raw data),
        or of a ``featurestore.insert`` run of its own. Its inputs include the group's previous commit,
        since a table version holds everything committed before it.
        """
        self._check_writable()
        with _Staged(self, data) as staged:
            new_fields = self._validate(staged)
            statistics = compute_statistics(staged.con, "incoming", staged.schema)
            previous = self.snapshot().version if self.exists() else None
            with contextlib.ExitStack() as stack:
                if run is None:
                    run = stack.enter_context(
                        track_run(
                            self._store.project,
                            "featurestore.insert",
                            params={"feature_group": self.ref, "rows": staged.rows},
                            code=_CODE,
                        )
                    )
                if previous is not None:
                    run.add_input(self.location, str(previous), kind="feature_group")
                committed = staged.commit(
                    [*self.primary_key, self.event_time],
                    {"fjord.run_id": run.run_id},
                    new_fields if previous is not None else None,
                )
                run.add_output(self.location, str(committed.version), kind="feature_group")
            self._record_commit(committed, staged, statistics, run.run_id)
            if self.online_enabled:
                self._write_online(staged)
        return committed.version

    def _validate(self, staged: _Staged) -> list[pa.Field]:
        if staged.rows == 0:
            raise FeatureStoreError(f"{self}: nothing to insert (the data has no rows)")
        new_fields = check_insert(staged.schema, self.schema, str(self), self.primary_key, self.event_time)
        keys = [*self.primary_key, self.event_time]
        nulls = " OR ".join(f"{_q(k)} IS NULL" for k in keys)
        count = staged.con.execute(f"SELECT count(*) FROM incoming WHERE {nulls}").fetchone()[0]
        if count:
            raise SchemaError(f"{self}: {count} row(s) have a null primary key or event time ({keys})")
        key_list = ", ".join(_q(k) for k in keys)
        dupes = staged.con.execute(
            f"SELECT {key_list}, count(*) AS n FROM incoming GROUP BY ALL HAVING n > 1 LIMIT 3"
        ).fetchall()
        if dupes:
            examples = "; ".join(str(tuple(d[:-1])) for d in dupes)
            raise SchemaError(
                f"{self}: duplicate (primary key, event time) rows within one insert, e.g. {examples}",
                hint="each (key, event time) may appear once per insert",
            )
        return new_fields

    def exists(self) -> bool:
        return DeltaOfflineStore(self.location).exists()

    def _record_commit(
        self, committed: Committed, staged: _Staged, statistics: dict[str, Any], run_id: str
    ) -> None:
        entry = next(
            h for h in DeltaOfflineStore(self.location).history() if h["version"] == committed.version
        )
        features = None
        known = {f.name for f in self.schema}
        if not known or set(staged.schema.names) - known:
            added = [
                f
                for f in features_of(staged.schema, self.primary_key, self.event_time)
                if f.name not in known
            ]
            features = [*self.schema, *added]
        commit = CommitRecord(
            commit_id=committed.version,
            committed_at=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
            rows=staged.rows,
            rows_inserted=staged.rows - committed.rows_updated,
            rows_updated=committed.rows_updated,
            run_id=run_id,
            statistics=statistics,
        )
        self._store.registry.add_commit(self.id, commit, features)
        if features is not None:
            self._record = self._record.model_copy(update={"features": features})

    def _write_online(self, staged: _Staged) -> None:
        keys = ", ".join(_q(k) for k in self.primary_key)
        values = [n for n in staged.schema.names if n not in self.primary_key]
        payload = "{" + ", ".join(f"{_q(n)}: {_q(n)}" for n in values) + "}"
        event_time = _q(self.event_time)
        distinct = staged.con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT {keys} FROM incoming)"
        ).fetchone()[0]
        if distinct == staged.rows:
            newest = f"SELECT {keys}, {event_time}, {payload} AS value FROM incoming"
        else:  # the online store keeps the newest row per key (arg_max spills; a window would not)
            newest = (
                f"SELECT {keys}, max({event_time}) AS {event_time}, "
                f"arg_max({payload}, {event_time}) AS value FROM incoming GROUP BY ALL"
            )
        # DuckDB encodes the rows, and sorts them (spilling past its cap) in key order: B-tree stores
        # then append instead of splitting pages at random.
        cursor = staged.con.execute(
            f"SELECT to_json([{keys}])::VARCHAR, epoch_us({event_time}), to_json(value)::VARCHAR "
            f"FROM ({newest}) ORDER BY 1"
        )

        def rows() -> Iterator[tuple[str, int, bytes]]:
            while batch := cursor.fetchmany(_ONLINE_BATCH):
                for key, ts, value in batch:
                    yield key, ts, value.encode()

        self._store.online.write(self.online_table, rows())

    @property
    def online_table(self) -> str:
        return f"{self.project}.{self.name}_{self.version}"

    # -- reading -----------------------------------------------------------------------------------

    def snapshot(self, as_of: int | datetime | str | None = None) -> Snapshot:
        """The offline table at commit ``as_of`` (id, or the last commit at or before a time)."""
        if isinstance(as_of, str):
            as_of = _parse_time(as_of)
        if isinstance(as_of, datetime) and as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        try:
            return DeltaOfflineStore(self.location).snapshot(as_of)
        except NotFoundError as exc:
            raise NotFoundError(f"{self}: {exc}") from None

    def read(
        self,
        as_of: int | datetime | str | None = None,
        *,
        columns: list[str] | None = None,
        dataframe_type: str = "pandas",
    ) -> Any:
        """The group's rows at the latest commit, or at ``as_of`` (commit id or timestamp)."""
        snapshot = self.snapshot(as_of)
        if dataframe_type == "spark":
            from fjord.spark import get_spark

            frame = get_spark().read.option("mergeSchema", "true").parquet(*spark_uris(snapshot.file_uris))
            return frame.select(*columns) if columns else frame
        table = DeltaOfflineStore(self.location).read(snapshot.version, columns)
        if dataframe_type in ("pyarrow", "arrow"):
            return table
        if dataframe_type == "pandas":
            return table.to_pandas()
        raise FeatureStoreError(f"dataframe_type must be pandas, pyarrow or spark, not {dataframe_type!r}")

    def commit_details(self, limit: int | None = None) -> dict[int, dict[str, Any]]:
        """Commit id -> when, rows in the insert, rows inserted and updated, the run that made it."""
        commits = self._store.registry.commits(self.id)[:limit]
        return {
            c.commit_id: {
                "committed_at": c.committed_at,
                "rows": c.rows,
                "rows_inserted": c.rows_inserted,
                "rows_updated": c.rows_updated,
                "run_id": c.run_id,
            }
            for c in commits
        }

    @property
    def statistics(self) -> dict[str, Any]:
        """The statistics of the latest commit's data."""
        return self.get_statistics()

    def get_statistics(self, commit_id: int | None = None) -> dict[str, Any]:
        commits = self._store.registry.commits(self.id)
        if not commits:
            raise NotFoundError(f"{self} has no commits yet")
        if commit_id is None:
            return {"commit_id": commits[0].commit_id, **commits[0].statistics}
        for commit in commits:
            if commit.commit_id == commit_id:
                return {"commit_id": commit_id, **commit.statistics}
        raise NotFoundError(f"{self} has no commit {commit_id}")


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise FeatureStoreError(f"as_of {text!r} is neither a commit id nor an ISO timestamp") from None


class _Staged:
    """Incoming data, made available to DuckDB (validation, statistics, online rows), then committed.

    A Spark DataFrame is cast to the normal types and written by its executors straight into a new
    directory of the feature group's table, never collected to the driver: DuckDB reads those files,
    and the commit adds them to the table as they are. pandas and pyarrow data stay in memory as
    Arrow until the commit writes them as one file. If the insert fails, the directory goes.
    """

    def __init__(self, group: FeatureGroup, data: Any) -> None:
        self.data = data
        self.table = DeltaOfflineStore(group.location)
        self.event_time = group.event_time
        self.stage = f"insert-{uuid.uuid4().hex}"  # not _-prefixed: Delta tools skip hidden paths
        self._committed = False

    def __enter__(self) -> _Staged:
        self.con = connect_duckdb()
        data = self.data
        self._table: pa.Table | None = None
        if type(data).__module__.startswith("pyspark.sql"):
            from fjord.spark import configure_storage

            fs = self.table.fs
            configure_storage(data.sparkSession)
            _normal_spark(data).write.parquet(fs.spark_uri(self.stage))
            files = fs.find(self.stage, suffix=".parquet")
            with fs.open(files[0]) as handle:
                self.schema = normal_schema(pq.read_schema(handle))
            uris = [fs.uri(f) for f in files]
            self.con.execute(f"CREATE VIEW incoming AS SELECT * FROM {read_parquet_sql(self.con, uris)}")
        else:
            self._table = normalise(_to_arrow(data))
            self.schema = self._table.schema
            self.con.register("incoming", self._table)
        self.rows = self.con.execute("SELECT count(*) FROM incoming").fetchone()[0]
        return self

    def commit(
        self, keys: list[str], metadata: dict[str, str], new_fields: list[pa.Field] | None
    ) -> Committed:
        """Upsert the rows on ``keys`` as one commit of the table."""
        if self._table is not None:
            with self.table.fs.open(f"{self.stage}/part-00000.parquet", "wb") as handle:
                pq.write_table(self._table, handle)
        committed = self.table.commit(
            self.con, "incoming", self.stage, keys, self.event_time, metadata, new_fields=new_fields
        )
        self._committed = True
        return committed

    def __exit__(self, *exc: object) -> None:
        self.con.close()
        if not self._committed and self.table.fs.exists(self.stage):
            self.table.fs.rm(self.stage, recursive=True)


def _normal_spark(frame: Any) -> Any:
    """``frame`` with its columns cast in Spark to the normal types (see :mod:`featurestore.schema`),
    so that the files its executors write can join the table as they are."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    casts = {T.ByteType: "bigint", T.ShortType: "bigint", T.IntegerType: "bigint", T.FloatType: "double"}
    casts[T.TimestampNTZType] = "timestamp"  # naive: taken as UTC (the session's time zone)
    columns = []
    for field in frame.schema.fields:
        column = F.col(f"`{field.name.replace('`', '``')}`")
        target = casts.get(type(field.dataType))
        columns.append(column.cast(target).alias(field.name) if target else column)
    return frame.select(*columns)


def _to_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise FeatureStoreError(
        f"cannot insert a {type(data).__name__}: pass a pandas, pyarrow or Spark DataFrame"
    )


def encode_key(values: list[Any]) -> str:
    """The online key of primary-key ``values``, as DuckDB's ``to_json`` writes it on insert."""
    return json.dumps([_plain(v) for v in values], separators=(",", ":"))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value

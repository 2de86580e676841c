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
import pyarrow.dataset as ds

from featurestore.engines.duckdb import connect_duckdb
from featurestore.errors import FeatureStoreError, FeatureStorePermissionError, SchemaError
from featurestore.offline import DeltaOfflineStore, Snapshot
from featurestore.registry import CommitRecord, GroupRecord
from featurestore.schema import Feature, check_insert, features_of, normal_schema, normalise
from featurestore.statistics import compute_statistics
from featurestore.versioned import Versioned
from fjord.errors import NotFoundError
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
            evolve = bool(new_fields) and previous is not None
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
                version = self._commit(staged, run.run_id, evolve)
                run.add_output(self.location, str(version), kind="feature_group")
            self._record_commit(version, staged, statistics, run.run_id)
            if self.online_enabled:
                self._write_online(staged)
        return version

    def _commit(self, staged: _Staged, run_id: str, evolve: bool) -> int:
        return DeltaOfflineStore(self.location).commit(
            staged.reader(), [*self.primary_key, self.event_time], {"fjord.run_id": run_id}, evolve=evolve
        )

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

    def _record_commit(self, version: int, staged: _Staged, statistics: dict[str, Any], run_id: str) -> None:
        history = DeltaOfflineStore(self.location).history()
        entry = next(h for h in history if h["version"] == version)
        metrics = entry.get("operationMetrics") or {}
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
            commit_id=version,
            committed_at=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
            rows=staged.rows,
            rows_inserted=metrics.get("num_target_rows_inserted", metrics.get("num_added_rows", staged.rows)),
            rows_updated=metrics.get("num_target_rows_updated", 0),
            run_id=run_id,
            statistics=statistics,
        )
        self._store.registry.add_commit(self.id, commit, features)
        if features is not None:
            self._record = self._record.model_copy(update={"features": features})

    def _write_online(self, staged: _Staged) -> None:
        keys = ", ".join(_q(k) for k in self.primary_key)
        values = [n for n in staged.schema.names if n not in self.primary_key]
        payload = ", ".join(f"{_q(n)}: {_q(n)}" for n in values)
        # DuckDB encodes the rows; the newest row per key is all the online store keeps.
        cursor = staged.con.execute(
            f"SELECT to_json([{keys}])::VARCHAR, epoch_us({_q(self.event_time)}), "
            f"to_json({{{payload}}})::VARCHAR FROM incoming "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {_q(self.event_time)} DESC) = 1 "
            "ORDER BY 1"  # in key order: B-tree stores append instead of splitting pages at random
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

            frame = get_spark().read.option("mergeSchema", "true").parquet(*snapshot.file_uris)
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
    """Incoming data made available to DuckDB (validation, statistics, online rows) and to delta-rs.

    pandas and pyarrow data stay in memory as Arrow. A Spark DataFrame is written by its executors to a
    hidden staging directory in the project (never collected to the driver) and streamed from there.
    """

    def __init__(self, group: FeatureGroup, data: Any) -> None:
        self.group = group
        self.data = data
        self._staging: str | None = None

    def __enter__(self) -> _Staged:
        self.con = connect_duckdb()
        data = self.data
        if type(data).__module__.startswith("pyspark.sql"):
            fs = self.group._store.project.fs
            self._staging = f"FeatureStore/_staging/{uuid.uuid4().hex}"
            data.write.parquet(fs.spark_uri(self._staging))
            files = [f for f in fs.backend.fs.find(fs.path(self._staging)) if f.endswith(".parquet")]
            dataset = ds.dataset(files, filesystem=fs.backend.fs, format="parquet")
            self.schema = normal_schema(dataset.schema)
            self._dataset: ds.Dataset | None = dataset
            self.con.register("incoming_raw", dataset)
            self.con.execute(f"CREATE VIEW incoming AS SELECT {self._casts()} FROM incoming_raw")
        else:
            table = _to_arrow(data)
            self._dataset = None
            self._table = normalise(table)
            self.schema = self._table.schema
            self.con.register("incoming", self._table)
        self.rows = self.con.execute("SELECT count(*) FROM incoming").fetchone()[0]
        return self

    def _casts(self) -> str:
        parts = []
        for field in self.schema:
            sql_type = "TIMESTAMPTZ" if pa.types.is_timestamp(field.type) else None
            if sql_type is None and pa.types.is_integer(field.type):
                sql_type = "BIGINT"
            if sql_type is None and pa.types.is_floating(field.type):
                sql_type = "DOUBLE"
            parts.append(f"{_q(field.name)}::{sql_type} AS {_q(field.name)}" if sql_type else _q(field.name))
        return ", ".join(parts)

    def reader(self) -> pa.RecordBatchReader:
        """The data as normalised Arrow batches, streamed."""
        if self._dataset is None:
            return self._table.to_reader()
        batches = (
            normalise(pa.Table.from_batches([b])).to_batches()[0]
            for b in self._dataset.to_batches()
            if b.num_rows
        )
        return pa.RecordBatchReader.from_batches(self.schema, batches)

    def __exit__(self, *exc: object) -> None:
        self.con.close()
        if self._staging is not None:
            self.group._store.project.fs.rm(self._staging, recursive=True)


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

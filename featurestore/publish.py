"""Publishing to feature groups: all or nothing across groups, one writer per group.

>>> with fs.publish(run=run) as publish:                       # doctest: +SKIP
...     publish.insert(transactions, transactions_frame)
...     publish.insert(labels, labels_frame)
>>> publish.commits                                            # doctest: +SKIP
{'fraud.transactions_features_1': 12, 'fraud.fraud_labels_1': 12}

``FeatureGroup.insert(data)`` is a publish of one group. How a publish commits:

1. **Lease.** It takes each group's writer lease (:mod:`featurestore.lease`) before touching the group,
   then undoes what a writer that died left behind: Delta commits that a writer of this registry
   marked as started (an intent, recorded before each Delta commit) and never registered are reverted
   (a restore commit), and committed rows that never reached the online store are written. A commit
   the registry neither registered nor marked was made through another metadata database: it is
   never reverted; the publish stops with :class:`UnknownCommitsError`, which names the command that
   adopts it (``fjord featurestore adopt``).
2. **Stage.** The incoming rows are validated and written as Parquet into the group's table directory.
   Rows the table already holds, value for value, are not committed again: a rerun of a published
   batch adds no commit.
3. **Delta commit**, one per group, after its intent is recorded. Readers do not see it yet: every
   reader through the feature store API reads the registry's commits (:meth:`FeatureGroup.snapshot`),
   not the table's newest version.
4. **The commit point**: the run's file is written (succeeded), then one transaction of the metadata
   database checks the leases are still held and that no one else committed to these tables since,
   records every group's commit (with its statistics and schema), clears the intents and indexes the
   publish's lineage run. Readers, the registry and lineage see all of the groups' commits from here,
   or, if the transaction never happens, none (the run file is rewritten as failed).
5. **After**: each commit's rows are written to the online store (the commit is marked pending until
   then, so a crash here is finished by the next writer), and the leases are released.

A failure before the commit point reverts the Delta commits it made; a process that dies leaves them
to the next writer's step 1.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.engines.duckdb import connect_duckdb, read_parquet_sql
from featurestore.errors import FeatureStoreError, SchemaError, UnknownCommitsError
from featurestore.lease import LeaseLostError, WriterLeases
from featurestore.offline import Committed, DeltaOfflineStore, write_descriptor
from featurestore.online_keys import encode_key_sql
from featurestore.registry import CommitRecord
from featurestore.schema import Feature, check_insert, features_of, normal_schema, normalise
from featurestore.statistics import compute_statistics
from fjord.errors import storage_full
from fjord.faults import crash_point
from fjord.lineage import RunRecord, index_run, lineage_engine, new_record, write_run_file

if TYPE_CHECKING:
    import duckdb

    from featurestore.feature_group import FeatureGroup
    from featurestore.store import FeatureStore

log = logging.getLogger(__name__)
_CODE = [Path(__file__).parent]
_ONLINE_BATCH = 10_000


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Pending:
    """A group's Delta commit made by this publish, not yet at the commit point."""

    group: FeatureGroup
    staged: Staged
    base: int | None  # the registered commit it builds on
    head: int | None  # the table's version before this publish wrote to it
    committed: Committed
    statistics: dict[str, Any]
    features: list[Feature] | None  # the group's features, when the insert added some


class Publish:
    """Inserts into one or more feature groups that become visible together (see the module doc).

    Use it as a context manager (``FeatureStore.publish``): leaving the block without an error is
    the commit; an error reverts every insert made in it.
    """

    def __init__(self, store: FeatureStore, run: RunRecord | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.commits: dict[str, int] = {}
        self.unchanged: list[str] = []  # groups that already held the rows
        self._store = store
        self._run = run
        self._pending: list[_Pending] = []
        self._stack = ExitStack()
        self._leases = WriterLeases(store.registry.engine)
        self._record = new_record(
            store.project, "featurestore.publish", code=_CODE, parent_run_id=run.run_id if run else None
        )

    def __enter__(self) -> Publish:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        where = self._store.project.fs.uri()
        try:
            try:
                if exc_type is None:
                    self._commit()
                else:
                    self._revert()
            finally:
                self._stack.close()
                self._leases.release()
        except OSError as error:  # the commit itself ran out of space
            raise storage_full(error, where) or error from error
        full = storage_full(exc, where) if exc is not None else None
        if full is not None:  # reverted: one line that says what happened, not an OSError
            raise full from exc

    # -- inserting -----------------------------------------------------------------------------------

    def insert(self, group: FeatureGroup, data: Any) -> int:
        """Upsert ``data`` (pandas, pyarrow or Spark) into ``group``; the commit id it will have.

        Rows are upserted on (primary key, event time). Bad data (schema, null keys, duplicate
        (key, time) rows, no rows) raises and leaves the group unchanged.
        """
        group.check_writable()
        if group.ref in self.commits:
            raise FeatureStoreError(f"{group} is already written by this publish: insert its rows once")
        self._leases.acquire(group.id, group.ref)
        group.reload()  # the schema as the previous writer left it
        crash_point("publish.leased")
        registered = self._recover(group)
        write_descriptor(group._record)  # groups created before descriptors existed get theirs here
        table = DeltaOfflineStore(group.location)
        head = table.latest_version()
        staged = self._stack.enter_context(Staged(group, data))
        new_fields = _validate(group, staged)
        crash_point("publish.staged")
        keys = [*group.primary_key, group.event_time]
        if (
            registered is not None
            and not new_fields
            and table.holds(staged.con, "incoming", registered, keys, group.event_time)
        ):
            self.commits[group.ref] = registered
            self.unchanged.append(group.ref)
            return registered
        statistics = compute_statistics(staged.con, "incoming", staged.schema)
        metadata = {
            "fjord.publish_id": self.id,
            "fjord.run_id": self._record.run_id,
            "fjord.commit": commit_metadata(staged.rows, statistics, staged.stage),
        }
        self._store.registry.add_intent(self.id, group.id)
        committed = staged.commit(keys, metadata, new_fields if registered is not None else None)
        crash_point("publish.delta_committed")
        self._pending.append(
            _Pending(group, staged, registered, head, committed, statistics, _features_after(group, staged))
        )
        self.commits[group.ref] = committed.version
        return committed.version

    def _recover(self, group: FeatureGroup) -> int | None:
        """Undo what a dead writer left in ``group`` (we hold its lease); the registered commit id."""
        registry = self._store.registry
        latest = registry.latest_commit(group.id)
        registered = latest.commit_id if latest else None
        table = DeltaOfflineStore(group.location)
        unfinished = unregistered_commits(table, registered)
        if unfinished:
            started = registry.intents(group.id)
            foreign = [e["version"] for e in unfinished if e.get("fjord.publish_id") not in started]
            if foreign:
                raise unknown_commits(group, foreign)
            log.warning(
                "%s: reverting Delta commit(s) %s after %s that a writer started and did not register "
                "(it died)",
                group,
                [e["version"] for e in unfinished],
                registered,
            )
            table.revert_to(registered, self._revert_metadata(registered))
            registry.clear_intents({e["fjord.publish_id"] for e in unfinished}, group_id=group.id)
        for commit in registry.online_pending(group.id):
            replay_online(group, table, commit)
        return registered

    # -- committing ----------------------------------------------------------------------------------

    def _commit(self) -> None:
        if not self._pending:
            return
        store, record = self._store, self._record
        record.inputs = list(self._run.inputs) if self._run else []
        for p in self._pending:
            if p.base is not None:
                record.add_input(p.group.location, str(p.base), kind="feature_group")
            record.add_output(p.group.location, str(p.committed.version), kind="feature_group")
        record.params = {"feature_groups": {p.group.ref: p.staged.rows for p in self._pending}}
        record.status, record.ended_at = "succeeded", datetime.now(UTC)
        engine = store.registry.engine
        same_database = engine.url == lineage_engine().url
        # The run file before the commit point: every group's Delta commit is made, so the file says
        # the publish is whole (what adoption by another metadata database relies on).
        write_run_file(store.project, record)
        try:
            commits = {p.group.ref: self._commit_record(p) for p in self._pending}
            with engine.begin() as conn:  # the commit point
                self._leases.check_held(conn, [p.group.id for p in self._pending])
                for p in self._pending:
                    self._check_only_ours(p)
                for p in self._pending:
                    store.registry.add_commit(conn, p.group.id, commits[p.group.ref], p.features)
                store.registry.clear_intents(self.id, conn)
                if same_database:
                    index_run(conn, store.project, record)
        except BaseException:
            self._revert()
            record.status = "failed"
            write_run_file(store.project, record)
            raise
        crash_point("publish.registered")
        if not same_database:
            with lineage_engine().begin() as conn:
                index_run(conn, store.project, record)
        for p in self._pending:
            p.staged.committed = True
            p.group.refresh_features(p.features)
            if self._run is not None:
                if p.base is not None:
                    self._run.add_input(p.group.location, str(p.base), kind="feature_group")
                self._run.add_output(p.group.location, str(p.committed.version), kind="feature_group")
        for p in self._pending:
            if p.group.online_enabled:
                write_online(p.group, p.staged.con, "incoming")
                store.registry.mark_online_written(p.group.id, p.committed.version)
                crash_point("publish.online_written")

    def _commit_record(self, p: _Pending) -> CommitRecord:
        entry = DeltaOfflineStore(p.group.location).entries_since(p.committed.version - 1)[-1]
        return CommitRecord(
            commit_id=p.committed.version,
            committed_at=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
            rows=p.staged.rows,
            rows_inserted=p.staged.rows - p.committed.rows_updated,
            rows_updated=p.committed.rows_updated,
            run_id=self._record.run_id,
            statistics=p.statistics,
            publish_id=self.id,
            stage=p.staged.stage,
            online_pending=p.group.online_enabled,
        )

    def _check_only_ours(self, p: _Pending) -> None:
        """Every Delta commit after this publish's starting version is this publish's own."""
        others = [
            e["version"]
            for e in DeltaOfflineStore(p.group.location).entries_since(p.head)
            if e.get("fjord.publish_id") != self.id
        ]
        if others:
            raise LeaseLostError(
                f"{p.group}: another writer committed version(s) {others} to its table during this "
                "publish; nothing was published",
                hint="one writer per feature group: rerun once the other writer is done",
            )

    def _revert_metadata(self, version: int | None) -> dict[str, str]:
        return {"fjord.restored_to": str(version), "fjord.publish_id": self.id}

    def _revert(self) -> None:
        reverted = True
        for p in reversed(self._pending):
            try:
                DeltaOfflineStore(p.group.location).revert_to(p.base, self._revert_metadata(p.base))
            except Exception:  # the next writer's recovery reverts it instead (its intent stays)
                reverted = False
                log.exception("%s: could not revert the uncommitted publish %s", p.group, self.id)
        if reverted and self._pending:
            self._store.registry.clear_intents(self.id)


def commit_metadata(rows: int, statistics: dict[str, Any], stage: str | None) -> str:
    """What a Delta commit carries about itself, so that a registry that lost it can rebuild its
    record from the table alone (``fjord featurestore adopt``)."""
    import json

    return json.dumps({"rows": rows, "statistics": statistics, "stage": stage}, default=str)


def unregistered_commits(table: DeltaOfflineStore, registered: int | None) -> list[dict[str, Any]]:
    """The Delta commits after ``registered`` that change data and are not undone yet: those after
    the last restore to ``registered`` (an earlier recovery's), leaving out vacuums' entries (they
    change no data). Empty when the table is at its registered commit."""
    head = table.latest_version()
    if head is None or head == registered:
        return []
    after = table.entries_since(registered)
    undone = [i for i, e in enumerate(after) if e.get("fjord.restored_to") == str(registered)]
    if undone:
        after = after[undone[-1] + 1 :]
    return [e for e in after if not str(e.get("operation", "")).startswith("VACUUM")]


def unknown_commits(group: FeatureGroup, versions: list[int]) -> UnknownCommitsError:
    return UnknownCommitsError(
        f"{group.ref}: its table holds Delta commit(s) {versions} that this metadata database did not make "
        "(another metadata database, or an older copy of this one, made them); nothing was changed",
        hint=f"adopt them with `fjord featurestore adopt {group.project}`, or point metadata.url at the "
        "database that made them",
    )


# -- staging -----------------------------------------------------------------------------------------


class Staged:
    """Incoming data, made available to DuckDB (validation, statistics, online rows), then committed.

    A Spark DataFrame is cast to the normal types and written by its executors straight into a new
    directory of the feature group's table, never collected to the driver: DuckDB reads those files,
    and the commit adds them to the table as they are. pandas and pyarrow data stay in memory as
    Arrow until the commit writes them as one file. If the publish does not commit, the directory goes.
    """

    def __init__(self, group: FeatureGroup, data: Any) -> None:
        self.data = data
        self.table = DeltaOfflineStore(group.location)
        self.event_time = group.event_time
        self.stage = f"insert-{uuid.uuid4().hex}"  # not _-prefixed: Delta tools skip hidden paths
        self.committed = False
        self._written = False

    def __enter__(self) -> Staged:
        self.con = connect_duckdb()
        data = self.data
        self._table: pa.Table | None = None
        if type(data).__module__.startswith("pyspark.sql"):
            from fjord.spark import configure_storage

            fs = self.table.fs
            configure_storage(data.sparkSession)
            _normal_spark(data).write.parquet(fs.spark_uri(self.stage))
            self._written = True
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
        """Upsert the rows on ``keys`` as one Delta commit of the table."""
        if self._table is not None:
            self._written = True
            with self.table.fs.open(f"{self.stage}/part-00000.parquet", "wb") as handle:
                pq.write_table(self._table, handle)
        return self.table.commit(
            self.con, "incoming", self.stage, keys, self.event_time, metadata, new_fields=new_fields
        )

    def __exit__(self, *exc: object) -> None:
        self.con.close()
        if not self.committed and self._written and self.table.fs.exists(self.stage):
            self.table.fs.rm(self.stage, recursive=True)


def _validate(group: FeatureGroup, staged: Staged) -> list[pa.Field]:
    """The columns the insert adds; raises on data the group cannot take."""
    if staged.rows == 0:
        raise FeatureStoreError(f"{group}: nothing to insert (the data has no rows)")
    new_fields = check_insert(staged.schema, group.schema, str(group), group.primary_key, group.event_time)
    keys = [*group.primary_key, group.event_time]
    nulls = " OR ".join(f"{_q(k)} IS NULL" for k in keys)
    count = staged.con.execute(f"SELECT count(*) FROM incoming WHERE {nulls}").fetchone()[0]
    if count:
        raise SchemaError(f"{group}: {count} row(s) have a null primary key or event time ({keys})")
    key_list = ", ".join(_q(k) for k in keys)
    dupes = staged.con.execute(
        f"SELECT {key_list}, count(*) AS n FROM incoming GROUP BY ALL HAVING n > 1 LIMIT 3"
    ).fetchall()
    if dupes:
        examples = "; ".join(str(tuple(d[:-1])) for d in dupes)
        raise SchemaError(
            f"{group}: duplicate (primary key, event time) rows within one insert, e.g. {examples}",
            hint="each (key, event time) may appear once per insert",
        )
    return new_fields


def _features_after(group: FeatureGroup, staged: Staged) -> list[Feature] | None:
    """The group's features once the insert commits, if it adds any (the first insert adds all)."""
    known = {f.name for f in group.schema}
    if known and not set(staged.schema.names) - known:
        return None
    added = [
        f for f in features_of(staged.schema, group.primary_key, group.event_time) if f.name not in known
    ]
    return [*group.schema, *added]


# -- the online store ----------------------------------------------------------------------------------


def write_online(group: FeatureGroup, con: duckdb.DuckDBPyConnection, relation: str) -> None:
    """Write the newest row per primary key of ``relation`` to ``group``'s online table."""
    keys = ", ".join(_q(k) for k in group.primary_key)
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {relation}").fetchall()}
    values = [n for n in types if n not in group.primary_key]
    payload = "{" + ", ".join(f"{_q(n)}: {_q(n)}" for n in values) + "}"
    event_time = _q(group.event_time)
    rows, distinct = con.execute(
        f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {relation})) FROM {relation}"
    ).fetchone()
    if distinct == rows:
        newest = f"SELECT {keys}, {event_time}, {payload} AS value FROM {relation}"
    else:  # the online store keeps the newest row per key (arg_max spills; a window would not)
        newest = (
            f"SELECT {keys}, max({event_time}) AS {event_time}, "
            f"arg_max({payload}, {event_time}) AS value FROM {relation} GROUP BY ALL"
        )
    # DuckDB encodes the rows, and sorts them (spilling past its cap) in key order: B-tree stores
    # then append instead of splitting pages at random.
    key_sql = encode_key_sql([(_q(k), types[k]) for k in group.primary_key])
    cursor = con.execute(
        f"SELECT {key_sql}, epoch_us({event_time}), to_json(value)::VARCHAR FROM ({newest}) ORDER BY 1"
    )

    def batches() -> Iterator[tuple[str, int, bytes]]:
        while batch := cursor.fetchmany(_ONLINE_BATCH):
            for key, ts, value in batch:
                yield key, ts, value.encode()

    group.online_store.write(group.online_table, batches())


def replay_online(group: FeatureGroup, table: DeltaOfflineStore, commit: CommitRecord) -> None:
    """Write a committed commit's incoming rows to the online store (its writer died before)."""
    files = [
        f
        for f in table.fs.find(commit.stage or "", suffix=".parquet")
        if posixpath.basename(f).startswith("part-")
    ]
    if group.online_enabled and files:
        log.warning("%s: writing commit %s to the online store (its writer died)", group, commit.commit_id)
        con = connect_duckdb()
        try:
            uris = [table.fs.uri(f) for f in files]
            con.execute(f"CREATE VIEW replay AS SELECT * FROM {read_parquet_sql(con, uris)}")
            write_online(group, con, "replay")
        finally:
            con.close()
    group.registry.mark_online_written(group.id, commit.commit_id)


# -- conversions -------------------------------------------------------------------------------------


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

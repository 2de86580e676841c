"""Feature groups: versioned tables of features keyed by primary key and event time.

>>> fg = fs.get_or_create_feature_group("card_transactions_4h", version=1, primary_key=["cc_num"],
...                                     event_time="ts", online_enabled=True)   # doctest: +SKIP
>>> commit = fg.insert(df)              # pandas, pyarrow or Spark; one atomic commit  # doctest: +SKIP
>>> fg.read(as_of=commit)               # time travel                                   # doctest: +SKIP
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from featurestore.errors import FeatureStoreError, FeatureStorePermissionError
from featurestore.offline import DeltaOfflineStore, Snapshot
from featurestore.registry import GroupRecord, Registry
from featurestore.schema import Feature
from featurestore.versioned import Versioned
from fjord.errors import NotFoundError
from fjord.fs import spark_uris
from fjord.lineage import RunRecord

if TYPE_CHECKING:
    from featurestore.online import OnlineStore
    from featurestore.query import Query
    from featurestore.store import FeatureStore


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
        self.check_writable()
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

    def check_writable(self) -> None:
        """Raise unless this project may write the group (a shared group is read only)."""
        if self.read_only:
            raise FeatureStorePermissionError(
                f"{self} belongs to project {self.project!r}: it is shared with {self._store.project.name!r} "
                "for reading only"
            )

    def insert(self, data: Any, *, run: RunRecord | None = None) -> int:
        """Upsert ``data`` (pandas, pyarrow or Spark DataFrame) as one atomic commit; its commit id.

        Rows are upserted on (primary key, event time). The data is validated first (schema, null
        keys, duplicate (key, time) rows, emptiness): bad data raises and leaves the group unchanged.
        Rows the group already holds, value for value, add no commit: the id is the current one.
        It is a publish of one group (:class:`featurestore.publish.Publish`, for several at once).

        Lineage: the commit is an output of a ``featurestore.publish`` run, a child of ``run`` (a
        job's run record) when given, whose inputs are that run's inputs (the raw data) and the
        group's previous commit.
        """
        with self._store.publish(run=run) as publish:
            commit = publish.insert(self, data)
        return commit

    def compact(self, *, run_id: str | None = None) -> Any:
        """Rewrite the latest commit's small files into few large ones, as a new commit with the same
        data (:mod:`featurestore.maintenance`); a :class:`MaintenanceReport`."""
        from featurestore.maintenance import compact

        return compact(self, run_id)

    def vacuum(self, retention_hours: float = 168.0) -> Any:
        """Delete files no kept commit reads (every commit a training dataset names, and the latest)
        that were removed more than ``retention_hours`` ago; a :class:`MaintenanceReport`."""
        from featurestore.maintenance import vacuum

        return vacuum(self, retention_hours)

    def exists(self) -> bool:
        """Whether the group has a commit."""
        return self._store.registry.latest_commit(self.id) is not None

    def reload(self) -> None:
        """Read the group's record again (another writer may have added features meanwhile)."""
        record = self._store.registry.get_group(self.project, self.name, self.version)
        if record is not None:
            self._record = record

    def refresh_features(self, features: list[Feature] | None) -> None:
        """Take the features a commit recorded (None: unchanged)."""
        if features is not None:
            self._record = self._record.model_copy(update={"features": features})

    @property
    def registry(self) -> Registry:
        return self._store.registry

    @property
    def online_store(self) -> OnlineStore:
        return self._store.online

    @property
    def online_table(self) -> str:
        return f"{self.project}.{self.name}_{self.version}"

    # -- reading -----------------------------------------------------------------------------------

    def snapshot(self, as_of: int | datetime | str | None = None) -> Snapshot:
        """The group at commit ``as_of`` (id, or the last commit at or before a time; default the latest).

        Only commits the registry recorded are read: a Delta commit whose publish has not reached its
        commit point (or never will) is invisible here, and so to every reader of the store.
        """
        if isinstance(as_of, str):
            as_of = _parse_time(as_of)
        if isinstance(as_of, datetime) and as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        registry = self._store.registry
        if isinstance(as_of, int):
            commit = registry.get_commit(self.id, as_of)
            if commit is None:
                raise NotFoundError(f"{self} has no commit {as_of}")
        else:
            commit = registry.latest_commit(self.id, as_of)
            if commit is None:
                when = f" at or before {as_of.isoformat()}" if as_of else " yet"
                raise NotFoundError(f"{self} has no commits{when}")
        return DeltaOfflineStore(self.location).snapshot(commit.commit_id, committed_at=commit.committed_at)

    def count_rows(self, as_of: int | datetime | str | None = None) -> int:
        """How many rows the group holds at the latest commit (or ``as_of``): all commits' rows, as
        upserted, not the last commit's alone (``commit_details`` gives those)."""
        snapshot = self.snapshot(as_of)
        return DeltaOfflineStore(self.location).count_rows(snapshot.version)

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

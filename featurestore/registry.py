"""The registry: metadata of feature groups, commits, feature views, training datasets and shares.

SQLAlchemy on Fjord's metadata database (SQLite by default, PostgreSQL when ``metadata.url`` says
so). Safe under concurrent writers from several processes: on SQLite every transaction takes the
write lock up front (``fjord.metadata``); a get-or-create that loses a race on PostgreSQL's unique
constraint reads the winner's row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from featurestore.schema import Feature
from fjord.metadata import ensure_tables, metadata_engine

_schema = MetaData()
SCHEMA = _schema  # what `fjord metadata migrate` copies
_groups = Table(
    "fs_feature_groups",
    _schema,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("primary_key", Text, nullable=False),
    Column("event_time", String(256), nullable=False),
    Column("online_enabled", Boolean, nullable=False),
    Column("table_uri", Text, nullable=False),
    Column("features", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project", "name", "version", name="uq_fs_group"),
)
_commits = Table(
    "fs_commits",
    _schema,
    Column("group_id", Integer, ForeignKey("fs_feature_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("commit_id", Integer, primary_key=True),
    Column("committed_at", DateTime(timezone=True), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("rows_inserted", Integer),
    Column("rows_updated", Integer),
    Column("run_id", String(128)),
    Column("statistics", Text, nullable=False),
    Column("publish_id", String(64)),
    Column("stage", Text),
    Column("online_pending", Boolean),
)
_intents = Table(  # Delta commits a writer of this database is making and has not yet registered
    "fs_publish_intents",
    _schema,
    Column("publish_id", String(64), primary_key=True),
    Column("group_id", Integer, ForeignKey("fs_feature_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
)
_views = Table(
    "fs_feature_views",
    _schema,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("query", Text, nullable=False),
    Column("labels", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("project", "name", "version", name="uq_fs_view"),
)
_datasets = Table(
    "fs_training_datasets",
    _schema,
    Column("view_id", Integer, ForeignKey("fs_feature_views.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("data_format", String(16), nullable=False),
    Column("uri", Text, nullable=False),
    Column("commits", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("run_id", String(128), nullable=False),
    Column("options", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
_shares = Table(
    "fs_shares",
    _schema,
    Column("group_id", Integer, ForeignKey("fs_feature_groups.id", ondelete="CASCADE"), primary_key=True),
    Column("with_project", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class GroupRecord(BaseModel):
    id: int | None = None
    project: str
    name: str
    version: int
    description: str = ""
    primary_key: list[str]
    event_time: str
    online_enabled: bool
    table_uri: str
    features: list[Feature] = Field(default_factory=list)
    created_at: datetime


class CommitRecord(BaseModel):
    commit_id: int
    committed_at: datetime
    rows: int
    rows_inserted: int | None = None
    rows_updated: int | None = None
    run_id: str | None = None
    statistics: dict[str, Any]
    publish_id: str | None = Field(default=None, description="the publish that committed it")
    stage: str | None = Field(default=None, description="the table directory holding its incoming rows")
    online_pending: bool | None = Field(default=None, description="committed, not yet in the online store")


class ViewRecord(BaseModel):
    id: int | None = None
    project: str
    name: str
    version: int
    description: str = ""
    query: dict[str, Any]
    labels: list[str]
    created_at: datetime


class TrainingDatasetRecord(BaseModel):
    view_id: int
    version: int
    data_format: str
    uri: str
    commits: dict[str, int] = Field(description="feature group 'project.name_version' -> commit id")
    rows: int
    run_id: str
    options: dict[str, Any]
    created_at: datetime


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def _named(table: Table, project: str, name: str, version: int) -> tuple[Any, ...]:
    return (table.c.project == project, table.c.name == name, table.c.version == version)


# Columns stored as JSON text, per table.
_JSON_COLUMNS = {
    "fs_feature_groups": ("primary_key", "features"),
    "fs_commits": ("statistics",),
    "fs_feature_views": ("query", "labels"),
    "fs_training_datasets": ("commits", "options"),
}
_Model = TypeVar("_Model", bound=BaseModel)


def _to_row(table: Table, record: BaseModel) -> dict[str, Any]:
    values = record.model_dump(exclude={"id"})
    for column in _JSON_COLUMNS[table.name]:
        values[column] = json.dumps(values[column], default=str)
    return values


def _from_row(model: type[_Model], table: Table, row: Any) -> _Model:
    data = dict(row._mapping)
    for column in _JSON_COLUMNS[table.name]:
        data[column] = json.loads(data[column])
    for key, value in data.items():
        if isinstance(value, datetime):
            data[key] = _utc(value)
    return model.model_validate(data)


class Registry:
    """Typed access to the registry tables."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or metadata_engine()
        ensure_tables(_schema, self.engine)

    # -- feature groups ----------------------------------------------------------------------------

    def get_group(self, project: str, name: str, version: int) -> GroupRecord | None:
        return self._get_named(GroupRecord, _groups, project, name, version)

    def get_or_create_group(self, record: GroupRecord) -> tuple[GroupRecord, bool]:
        """The stored group with ``record``'s (project, name, version), created from it if absent."""
        return self._get_or_create(GroupRecord, _groups, record)

    def _get_named(
        self, model: type[_Model], table: Table, project: str, name: str, version: int
    ) -> _Model | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(*_named(table, project, name, version))).first()
        return _from_row(model, table, row) if row else None

    def _get_or_create(self, model: type[_Model], table: Table, record: Any) -> tuple[_Model, bool]:
        query = select(table).where(*_named(table, record.project, record.name, record.version))
        try:
            with self.engine.begin() as conn:  # on SQLite: holds the write lock from the first read
                row = conn.execute(query).first()
                created = row is None
                if created:
                    conn.execute(insert(table).values(**_to_row(table, record)))
                    row = conn.execute(query).one()
        except IntegrityError:  # PostgreSQL: another process inserted it between our read and insert
            with self.engine.connect() as conn:
                row, created = conn.execute(query).one(), False
        return _from_row(model, table, row), created

    def list_groups(self, project: str | None = None) -> list[GroupRecord]:
        query = select(_groups).order_by(_groups.c.project, _groups.c.name, _groups.c.version)
        if project is not None:
            query = query.where(_groups.c.project == project)
        with self.engine.connect() as conn:
            return [_from_row(GroupRecord, _groups, r) for r in conn.execute(query)]

    def set_features(self, group_id: int, features: list[Feature], conn: Connection | None = None) -> None:
        stmt = (
            update(_groups)
            .where(_groups.c.id == group_id)
            .values(features=json.dumps([f.model_dump() for f in features]))
        )
        if conn is not None:
            conn.execute(stmt)
            return
        with self.engine.begin() as own:
            own.execute(stmt)

    def search(self, text: str) -> list[tuple[GroupRecord, list[Feature]]]:
        """Groups whose name or description contains ``text``, or that have such features."""
        needle = f"%{text.lower()}%"
        query = select(_groups).where(
            or_(
                func.lower(_groups.c.name).like(needle),
                func.lower(_groups.c.description).like(needle),
                func.lower(_groups.c.features).like(needle),
            )
        )
        with self.engine.connect() as conn:
            groups = [_from_row(GroupRecord, _groups, r) for r in conn.execute(query)]
        found = []
        for group in groups:
            hits = [f for f in group.features if text.lower() in f"{f.name} {f.description}".lower()]
            found.append((group, hits))
        return found

    # -- commits -----------------------------------------------------------------------------------

    def add_commit(
        self, conn: Connection, group_id: int, commit: CommitRecord, features: list[Feature] | None = None
    ) -> None:
        """Record a commit (and the group's features, if it added some) within ``conn``'s transaction:
        the publish's commit point (:mod:`featurestore.publish`)."""
        conn.execute(insert(_commits).values(group_id=group_id, **_to_row(_commits, commit)))
        if features is not None:
            self.set_features(group_id, features, conn)

    def commits(self, group_id: int) -> list[CommitRecord]:
        """The group's committed commits, newest first."""
        query = select(_commits).where(_commits.c.group_id == group_id).order_by(_commits.c.commit_id.desc())
        with self.engine.connect() as conn:
            return [_from_row(CommitRecord, _commits, r) for r in conn.execute(query)]

    def latest_commit(self, group_id: int, at_or_before: datetime | None = None) -> CommitRecord | None:
        """The newest commit (at or before a time, if given): what readers read."""
        query = select(_commits).where(_commits.c.group_id == group_id)
        if at_or_before is not None:
            query = query.where(_commits.c.committed_at <= at_or_before)
        query = query.order_by(_commits.c.commit_id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _from_row(CommitRecord, _commits, row) if row else None

    def get_commit(self, group_id: int, commit_id: int) -> CommitRecord | None:
        query = select(_commits).where(_commits.c.group_id == group_id, _commits.c.commit_id == commit_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _from_row(CommitRecord, _commits, row) if row else None

    def online_pending(self, group_id: int) -> list[CommitRecord]:
        """Commits whose rows are not in the online store yet (their writer died after the commit)."""
        query = (
            select(_commits)
            .where(_commits.c.group_id == group_id, _commits.c.online_pending.is_(True))
            .order_by(_commits.c.commit_id)
        )
        with self.engine.connect() as conn:
            return [_from_row(CommitRecord, _commits, r) for r in conn.execute(query)]

    def mark_online_written(self, group_id: int, commit_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(_commits)
                .where(_commits.c.group_id == group_id, _commits.c.commit_id == commit_id)
                .values(online_pending=False)
            )

    # -- intents: what a writer of this database started and did not finish ------------------------

    def add_intent(self, publish_id: str, group_id: int) -> None:
        """Mark that ``publish_id`` is about to make a Delta commit to the group: if its writer dies
        before the commit point, the next writer reverts that commit, and only commits so marked."""
        with self.engine.begin() as conn:
            conn.execute(
                insert(_intents).values(
                    publish_id=publish_id, group_id=group_id, started_at=datetime.now(UTC)
                )
            )

    def intents(self, group_id: int) -> set[str]:
        """The publish ids with an unfinished Delta commit to the group."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_intents.c.publish_id).where(_intents.c.group_id == group_id))
            return {r.publish_id for r in rows}

    def clear_intents(
        self, publish_ids: set[str] | str, conn: Connection | None = None, *, group_id: int | None = None
    ) -> None:
        """The publishes are registered (within the commit point's ``conn``) or reverted (in one
        group, ``group_id``, or all of theirs)."""
        ids = {publish_ids} if isinstance(publish_ids, str) else set(publish_ids)
        stmt = _intents.delete().where(_intents.c.publish_id.in_(ids))
        if group_id is not None:
            stmt = stmt.where(_intents.c.group_id == group_id)
        if conn is not None:
            conn.execute(stmt)
            return
        with self.engine.begin() as own:
            own.execute(stmt)

    # -- sharing -----------------------------------------------------------------------------------

    def share(self, group_id: int, with_project: str) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(_shares).where(_shares.c.group_id == group_id, _shares.c.with_project == with_project)
            ).first()
            if exists is None:
                conn.execute(
                    insert(_shares).values(
                        group_id=group_id, with_project=with_project, created_at=datetime.now(UTC)
                    )
                )

    def is_shared(self, group_id: int, with_project: str) -> bool:
        query = select(_shares).where(_shares.c.group_id == group_id, _shares.c.with_project == with_project)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    # -- feature views and training datasets -------------------------------------------------------

    def get_view(self, project: str, name: str, version: int) -> ViewRecord | None:
        return self._get_named(ViewRecord, _views, project, name, version)

    def get_or_create_view(self, record: ViewRecord) -> tuple[ViewRecord, bool]:
        return self._get_or_create(ViewRecord, _views, record)

    def list_views(self, project: str) -> list[ViewRecord]:
        query = select(_views).where(_views.c.project == project).order_by(_views.c.name, _views.c.version)
        with self.engine.connect() as conn:
            return [_from_row(ViewRecord, _views, r) for r in conn.execute(query)]

    def reserve_dataset(
        self, record: TrainingDatasetRecord, taken: Callable[[int], bool] = lambda version: False
    ) -> TrainingDatasetRecord:
        """Take the view's next training dataset version for ``record`` (status ``materializing``),
        past any version ``taken`` says is already published (by another metadata database)."""
        for _ in range(20):
            with self.engine.connect() as conn:
                latest = conn.execute(
                    select(func.max(_datasets.c.version)).where(_datasets.c.view_id == record.view_id)
                ).scalar()
            version = (latest or 0) + 1
            while taken(version):
                version += 1
            reserved = record.model_copy(update={"version": version})
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(_datasets).values(status="materializing", **_to_row(_datasets, reserved))
                    )
                return reserved
            except IntegrityError:  # another process took that version: take the next
                continue
        raise RuntimeError("could not reserve a training dataset version after 20 attempts")

    def finish_dataset(self, record: TrainingDatasetRecord) -> None:
        """Mark a reserved version ready, with its rows, commits and URI."""
        with self.engine.begin() as conn:
            conn.execute(
                update(_datasets)
                .where(_datasets.c.view_id == record.view_id, _datasets.c.version == record.version)
                .values(status="ready", rows=record.rows, commits=json.dumps(record.commits), uri=record.uri)
            )

    def drop_dataset(self, view_id: int, version: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                _datasets.delete().where(_datasets.c.view_id == view_id, _datasets.c.version == version)
            )

    def get_dataset(self, view_id: int, version: int) -> TrainingDatasetRecord | None:
        query = select(_datasets).where(
            _datasets.c.view_id == view_id, _datasets.c.version == version, _datasets.c.status == "ready"
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return _from_row(TrainingDatasetRecord, _datasets, row) if row else None

    def list_datasets(self, view_id: int) -> list[int]:
        query = (
            select(_datasets.c.version)
            .where(_datasets.c.view_id == view_id, _datasets.c.status == "ready")
            .order_by(_datasets.c.version)
        )
        with self.engine.connect() as conn:
            return [r.version for r in conn.execute(query)]

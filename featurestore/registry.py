"""The registry: metadata of feature groups, commits, feature views, training datasets and shares.

SQLAlchemy on Fjord's metadata database (SQLite by default, PostgreSQL when ``metadata.url`` says
so). Safe under concurrent writers from several processes: on SQLite every transaction takes the
write lock up front (``fjord.metadata``); a get-or-create that loses a race on PostgreSQL's unique
constraint reads the winner's row.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

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
from fjord.metadata import metadata_engine

_schema = MetaData()
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


class Registry:
    """Typed access to the registry tables."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or metadata_engine()
        _schema.create_all(self.engine, checkfirst=True)

    # -- feature groups ----------------------------------------------------------------------------

    def _group(self, row: Any) -> GroupRecord:
        return GroupRecord(
            id=row.id,
            project=row.project,
            name=row.name,
            version=row.version,
            description=row.description,
            primary_key=json.loads(row.primary_key),
            event_time=row.event_time,
            online_enabled=row.online_enabled,
            table_uri=row.table_uri,
            features=[Feature(**f) for f in json.loads(row.features)],
            created_at=_utc(row.created_at),
        )

    def get_group(self, project: str, name: str, version: int) -> GroupRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_groups).where(*_named(_groups, project, name, version))).first()
        return self._group(row) if row else None

    def get_or_create_group(self, record: GroupRecord) -> tuple[GroupRecord, bool]:
        """The stored group with ``record``'s (project, name, version), created from it if absent."""
        values = record.model_dump(exclude={"id"})
        values["primary_key"] = json.dumps(record.primary_key)
        values["features"] = json.dumps([f.model_dump() for f in record.features])
        row, created = self._get_or_create(_groups, values, record.project, record.name, record.version)
        return self._group(row), created

    def _get_or_create(
        self, table: Table, values: dict[str, Any], project: str, name: str, version: int
    ) -> tuple[Any, bool]:
        query = select(table).where(*_named(table, project, name, version))
        try:
            with self.engine.begin() as conn:  # on SQLite: holds the write lock from the first read
                row = conn.execute(query).first()
                if row is not None:
                    return row, False
                conn.execute(insert(table).values(**values))
                return conn.execute(query).one(), True
        except IntegrityError:  # PostgreSQL: another process inserted it between our read and insert
            with self.engine.connect() as conn:
                return conn.execute(query).one(), False

    def list_groups(self, project: str | None = None) -> list[GroupRecord]:
        query = select(_groups).order_by(_groups.c.project, _groups.c.name, _groups.c.version)
        if project is not None:
            query = query.where(_groups.c.project == project)
        with self.engine.connect() as conn:
            return [self._group(r) for r in conn.execute(query)]

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
            groups = [self._group(r) for r in conn.execute(query)]
        found = []
        for group in groups:
            hits = [f for f in group.features if text.lower() in f"{f.name} {f.description}".lower()]
            found.append((group, hits))
        return found

    # -- commits -----------------------------------------------------------------------------------

    def add_commit(self, group_id: int, commit: CommitRecord, features: list[Feature] | None = None) -> None:
        """Record a commit (and the group's features, if it added some) in one transaction."""
        values = commit.model_dump()
        values["statistics"] = json.dumps(commit.statistics, default=str)
        with self.engine.begin() as conn:
            conn.execute(insert(_commits).values(group_id=group_id, **values))
            if features is not None:
                self.set_features(group_id, features, conn)

    def commits(self, group_id: int) -> list[CommitRecord]:
        query = select(_commits).where(_commits.c.group_id == group_id).order_by(_commits.c.commit_id.desc())
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            CommitRecord(
                commit_id=r.commit_id,
                committed_at=_utc(r.committed_at),
                rows=r.rows,
                rows_inserted=r.rows_inserted,
                rows_updated=r.rows_updated,
                run_id=r.run_id,
                statistics=json.loads(r.statistics),
            )
            for r in rows
        ]

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

    def _view(self, row: Any) -> ViewRecord:
        return ViewRecord(
            id=row.id,
            project=row.project,
            name=row.name,
            version=row.version,
            description=row.description,
            query=json.loads(row.query),
            labels=json.loads(row.labels),
            created_at=_utc(row.created_at),
        )

    def get_view(self, project: str, name: str, version: int) -> ViewRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(_views).where(*_named(_views, project, name, version))).first()
        return self._view(row) if row else None

    def get_or_create_view(self, record: ViewRecord) -> tuple[ViewRecord, bool]:
        values = record.model_dump(exclude={"id"})
        values["query"] = json.dumps(record.query)
        values["labels"] = json.dumps(record.labels)
        row, created = self._get_or_create(_views, values, record.project, record.name, record.version)
        return self._view(row), created

    def list_views(self, project: str) -> list[ViewRecord]:
        query = select(_views).where(_views.c.project == project).order_by(_views.c.name, _views.c.version)
        with self.engine.connect() as conn:
            return [self._view(r) for r in conn.execute(query)]

    def reserve_dataset(self, record: TrainingDatasetRecord) -> TrainingDatasetRecord:
        """Take the view's next training dataset version for ``record`` (status ``materializing``)."""
        for _ in range(20):
            with self.engine.connect() as conn:
                latest = conn.execute(
                    select(func.max(_datasets.c.version)).where(_datasets.c.view_id == record.view_id)
                ).scalar()
            reserved = record.model_copy(update={"version": (latest or 0) + 1})
            values = reserved.model_dump()
            values.update(
                commits=json.dumps(reserved.commits), options=json.dumps(reserved.options, default=str)
            )
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(_datasets).values(status="materializing", **values))
                return reserved
            except IntegrityError:  # another process took that version: take the next
                continue
        raise RuntimeError("could not reserve a training dataset version after 20 attempts")

    def finish_dataset(self, record: TrainingDatasetRecord) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(_datasets)
                .where(_datasets.c.view_id == record.view_id, _datasets.c.version == record.version)
                .values(status="ready", rows=record.rows, commits=json.dumps(record.commits))
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
        if row is None:
            return None
        return TrainingDatasetRecord(
            view_id=row.view_id,
            version=row.version,
            data_format=row.data_format,
            uri=row.uri,
            commits=json.loads(row.commits),
            rows=row.rows,
            run_id=row.run_id,
            options=json.loads(row.options),
            created_at=_utc(row.created_at),
        )

    def list_datasets(self, view_id: int) -> list[int]:
        query = (
            select(_datasets.c.version)
            .where(_datasets.c.view_id == view_id, _datasets.c.status == "ready")
            .order_by(_datasets.c.version)
        )
        with self.engine.connect() as conn:
            return [r.version for r in conn.execute(query)]

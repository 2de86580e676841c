"""The entry point: a project's feature store.

>>> import featurestore
>>> fs = featurestore.connect(project="fraud")      # doctest: +SKIP
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from featurestore.adopt import Adopted, adopt
from featurestore.errors import FeatureStoreError, FeatureStorePermissionError, UnknownCommitsError
from featurestore.feature_group import FeatureGroup
from featurestore.feature_view import FeatureView
from featurestore.offline import DeltaOfflineStore, write_descriptor
from featurestore.online import OnlineStore, online_store
from featurestore.publish import Publish
from featurestore.query import Query, _Join
from featurestore.registry import GroupRecord, Registry, ViewRecord
from fjord.errors import NotFoundError
from fjord.lineage import RunRecord
from fjord.projects import Project, get_project, validate_name

FEATURE_STORE_DIR = "FeatureStore"


def connect(project: str) -> FeatureStore:
    """The feature store of ``project`` (settings come from Fjord's config)."""
    return FeatureStore(get_project(project))


class FeatureStore:
    """Feature groups and feature views of one project, plus the groups shared with it."""

    def __init__(self, project: Project, registry: Registry | None = None) -> None:
        self.project = project
        self.registry = registry or Registry()
        self._online: OnlineStore | None = None

    def __repr__(self) -> str:
        return f"FeatureStore({self.project.name})"

    @property
    def online(self) -> OnlineStore:
        if self._online is None:
            self._online = online_store()
        return self._online

    def publish(self, run: RunRecord | None = None) -> Publish:
        """A publish: inserts into several feature groups that become visible together, or not at all.

        >>> with fs.publish(run=run) as publish:        # doctest: +SKIP
        ...     publish.insert(transactions, frame)
        ...     publish.insert(labels, label_frame)
        """
        return Publish(self, run)

    # -- feature groups ------------------------------------------------------------------------------

    def get_or_create_feature_group(
        self,
        name: str,
        version: int = 1,
        *,
        primary_key: list[str],
        event_time: str,
        description: str = "",
        online_enabled: bool = False,
    ) -> FeatureGroup:
        """The feature group ``name`` at ``version``, created if it does not exist yet."""
        validate_name(name, "feature group")
        if not isinstance(version, int) or version < 1:
            raise FeatureStoreError(f"feature group version must be a positive integer, not {version!r}")
        if not primary_key:
            raise FeatureStoreError(f"feature group {name!r} needs a primary key")
        if event_time in primary_key:
            raise FeatureStoreError(f"event time {event_time!r} cannot also be part of the primary key")
        record = GroupRecord(
            project=self.project.name,
            name=name,
            version=version,
            description=description,
            primary_key=list(primary_key),
            event_time=event_time,
            online_enabled=online_enabled,
            table_uri=self.project.fs.uri(f"{FEATURE_STORE_DIR}/{name}_{version}"),
            created_at=datetime.now(UTC),
        )
        if self.registry.get_group(record.project, name, version) is None:
            self._refuse_unknown_table(record)
        stored, created = self.registry.get_or_create_group(record)
        if created:
            write_descriptor(stored)
        if not created and (stored.primary_key, stored.event_time) != (record.primary_key, event_time):
            raise FeatureStoreError(
                f"feature group {name!r} version {version} exists with primary key {stored.primary_key} and "
                f"event time {stored.event_time!r}",
                hint=f"a different key or event time needs a new version (version={version + 1})",
            )
        return FeatureGroup(self, stored)

    def get_feature_group(
        self, name: str, version: int | None = None, *, project: str | None = None
    ) -> FeatureGroup:
        """An existing feature group (latest version if none given), of this project or one shared with it."""
        owner = project or self.project.name
        validate_name(name, "feature group")
        validate_name(owner)
        candidates = [g for g in self.registry.list_groups(owner) if g.name == name]
        if version is not None:
            candidates = [g for g in candidates if g.version == version]
        if not candidates:
            what = f"{owner}.{name}" + (f" version {version}" if version is not None else "")
            known = sorted({f"{g.name} v{g.version}" for g in self.registry.list_groups(owner)})
            raise NotFoundError(
                f"unknown feature group {what} (groups of {owner}: {', '.join(known) or 'none yet'})"
            )
        record = max(candidates, key=lambda g: g.version)
        if owner == self.project.name:
            return FeatureGroup(self, record)
        if not self.registry.is_shared(record.id or 0, self.project.name):
            raise FeatureStorePermissionError(
                f"feature group {owner}.{name} version {record.version} is not shared with project "
                f"{self.project.name!r}",
                hint=f"its owner can run fs.share(fg, with_project={self.project.name!r})",
            )
        return FeatureGroup(self, record, read_only=True)

    def _refuse_unknown_table(self, record: GroupRecord) -> None:
        """A new group's table directory must not hold commits already: they were made through another
        metadata database, and this one would take them for a dead writer's (module featurestore.adopt)."""
        table = DeltaOfflineStore(record.table_uri)
        if table.exists():
            raise UnknownCommitsError(
                f"feature group {record.project}.{record.name} version {record.version} is not in this "
                f"metadata database, but its table {record.table_uri} holds {table.latest_version() + 1} "
                "Delta commit(s): another metadata database (or an older copy of this one) made them; "
                "nothing was changed",
                hint=f"adopt them with `fjord featurestore adopt {record.project}`, or point metadata.url at "
                "the database that made them",
            )

    def adopt(self) -> Adopted:
        """Register the project's feature group tables and commits this metadata database does not
        know, from the tables themselves (see :mod:`featurestore.adopt`)."""
        return adopt(self)

    def get_feature_groups(self, name: str | None = None) -> list[FeatureGroup]:
        """This project's feature groups (all versions), optionally only those called ``name``."""
        groups = self.registry.list_groups(self.project.name)
        return [FeatureGroup(self, g) for g in groups if name is None or g.name == name]

    def share(self, group: FeatureGroup, with_project: str) -> None:
        """Let ``with_project`` read ``group`` (read only)."""
        if group.project != self.project.name or group.read_only:
            raise FeatureStorePermissionError(f"only project {group.project!r} can share {group}")
        get_project(with_project)
        self.registry.share(group.id, with_project)

    def search(self, text: str) -> list[dict[str, Any]]:
        """Feature groups and features whose name or description mentions ``text``."""
        if not text.strip():
            raise FeatureStoreError("search for something: the text is empty")
        return [
            {
                "project": g.project,
                "feature_group": g.name,
                "version": g.version,
                "description": g.description,
                "features": [f.name for f in hits],
            }
            for g, hits in self.registry.search(text)
            if g.project == self.project.name or self.registry.is_shared(g.id or 0, self.project.name)
        ]

    # -- feature views -------------------------------------------------------------------------------

    def get_or_create_feature_view(
        self,
        name: str,
        version: int = 1,
        *,
        query: Query,
        labels: list[str] | None = None,
        description: str = "",
    ) -> FeatureView:
        """The feature view ``name`` at ``version`` over ``query``, created if it does not exist yet."""
        validate_name(name, "feature view")
        labels = list(labels or [])
        missing = [label for label in labels if label not in query.output_columns()]
        if missing:
            raise FeatureStoreError(
                f"label(s) {missing} are not among the query's features {query.output_columns()}"
            )
        record = ViewRecord(
            project=self.project.name,
            name=name,
            version=version,
            description=description,
            query=query.to_dict(),
            labels=labels,
            created_at=datetime.now(UTC),
        )
        stored, created = self.registry.get_or_create_view(record)
        if not created and (stored.query, stored.labels) != (record.query, record.labels):
            raise FeatureStoreError(
                f"feature view {name!r} version {version} exists with another query or labels",
                hint=f"a changed view needs a new version (version={version + 1})",
            )
        return FeatureView(self, stored, query)

    def get_feature_view(self, name: str, version: int = 1) -> FeatureView:
        record = self.registry.get_view(self.project.name, name, version)
        if record is None:
            raise NotFoundError(f"unknown feature view {self.project.name}.{name} version {version}")
        return FeatureView(self, record, self._query_from(record.query))

    def get_feature_views(self) -> list[FeatureView]:
        return [
            FeatureView(self, r, self._query_from(r.query))
            for r in self.registry.list_views(self.project.name)
        ]

    def _query_from(self, stored: dict[str, Any]) -> Query:
        def group(ref: dict[str, Any]) -> FeatureGroup:
            return self.get_feature_group(ref["name"], ref["version"], project=ref["project"])

        joins = tuple(
            _Join(
                Query(group(j["group"]), j["features"]),
                tuple((a, b) for a, b in j["keys"]),
                j["prefix"],
                timedelta(seconds=j["max_lookback_s"]) if j["max_lookback_s"] is not None else None,
            )
            for j in stored["joins"]
        )
        return Query(group(stored["group"]), stored["features"], joins)

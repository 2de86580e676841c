"""Compaction and vacuum of feature group tables, without breaking any training dataset's time travel.

Every daily publish adds files to a group's Delta table; reads slow down as they pile up, and the
copy-on-write upserts leave removed files behind. :func:`compact` rewrites the latest commit's small
files into few large ones as one more commit, registered like any other (0 rows, the same data and
statistics, ``run_id`` the maintenance run), under the group's writer lease so no publish interleaves.
:func:`vacuum` then deletes removed files older than the retention, except those of:

- every commit a training dataset of the project names (so ``recreate_training_data`` and the
  lineage's time travel keep working for every dataset a model was trained on), and
- the group's latest commit.

Time travel to any other commit may end after a vacuum, as with Delta Lake's own ``VACUUM``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from featurestore.errors import FeatureStoreError
from featurestore.feature_group import FeatureGroup
from featurestore.lease import WriterLeases
from featurestore.offline import DeltaOfflineStore
from featurestore.publish import commit_metadata, unregistered_commits
from featurestore.registry import CommitRecord

COMPACTION = "compaction"


@dataclass
class MaintenanceReport:
    """What maintenance did to one group."""

    group: str
    compacted_into: int | None = None
    files_removed: int = 0
    files_added: int = 0
    kept_versions: list[int] = field(default_factory=list)
    vacuumed: int = 0

    def summary(self) -> str:
        compacted = (
            f"compacted {self.files_removed} files into {self.files_added} (commit {self.compacted_into})"
            if self.compacted_into is not None
            else "nothing to compact"
        )
        return f"{self.group}: {compacted}; vacuumed {self.vacuumed} files, kept commits {self.kept_versions}"


def named_commits(group: FeatureGroup) -> set[int]:
    """The group's commits that a training dataset of its project names."""
    registry = group.registry
    names: set[int] = set()
    for view in registry.list_views(group.project):
        for version in registry.list_datasets(view.id):  # type: ignore[arg-type]
            record = registry.get_dataset(view.id, version)  # type: ignore[arg-type]
            if record is not None and group.ref in record.commits:
                names.add(int(record.commits[group.ref]))
    return names


def compact(group: FeatureGroup, run_id: str | None = None) -> MaintenanceReport:
    """Compact the group's latest commit into a new, registered commit (see the module docstring)."""
    report = MaintenanceReport(group.ref)
    group.check_writable()
    registry = group.registry
    leases = WriterLeases(registry.engine)
    leases.acquire(group.id, group.ref)
    try:
        latest = registry.latest_commit(group.id)
        if latest is None:
            return report
        table = DeltaOfflineStore(group.location)
        if unregistered_commits(table, latest.commit_id):
            raise FeatureStoreError(
                f"{group} has Delta commits after its last registered one ({latest.commit_id}): a writer "
                "died mid-publish",
                hint="the next publish to the group recovers it; compact after that",
            )
        publish_id = uuid.uuid4().hex
        registry.add_intent(publish_id, group.id)  # a crash before the commit below: the next writer reverts
        metrics = table.compact(
            {
                "fjord.compaction_of": str(latest.commit_id),
                "fjord.run_id": run_id or "",
                "fjord.publish_id": publish_id,
                "fjord.commit": commit_metadata(0, latest.statistics, COMPACTION),
            }
        )
        if metrics["version"] is None:
            registry.clear_intents(publish_id)
            return report
        report.compacted_into = int(metrics["version"])
        report.files_removed = int(metrics.get("numFilesRemoved", 0))
        report.files_added = int(metrics.get("numFilesAdded", 0))
        commit = CommitRecord(
            commit_id=report.compacted_into, committed_at=datetime.now(UTC), rows=0, rows_inserted=0,
            rows_updated=0, run_id=run_id, statistics=latest.statistics, publish_id=publish_id,
            stage=COMPACTION, online_pending=False,
        )  # fmt: skip
        with registry.engine.begin() as conn:
            registry.add_commit(conn, group.id, commit)
            registry.clear_intents(publish_id, conn)
    finally:
        leases.release()
    return report


def vacuum(
    group: FeatureGroup, retention_hours: float = 168.0, report: MaintenanceReport | None = None
) -> MaintenanceReport:
    """Delete the group's unreferenced files older than ``retention_hours``, keeping every commit a
    training dataset names and the latest (see the module docstring)."""
    report = report or MaintenanceReport(group.ref)
    group.check_writable()
    latest = group.registry.latest_commit(group.id)
    if latest is None:
        return report
    keep = sorted(named_commits(group) | {latest.commit_id})
    report.kept_versions = keep
    report.vacuumed = len(DeltaOfflineStore(group.location).vacuum(keep, retention_hours))
    return report

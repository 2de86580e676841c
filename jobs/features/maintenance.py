"""Feature store maintenance: compact and vacuum every feature group of a project.

    python -m jobs.features.maintenance --project fraud [--groups card_features] [--retention-hours 24]

Each group's latest commit is compacted into a new commit with the same data, then files removed
more than the retention ago are deleted, except those of every commit a training dataset names and
of the latest commit (featurestore/maintenance.py). Shared (read-only) groups are left to their owner.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

import featurestore
from featurestore.maintenance import MaintenanceReport
from fjord.jobmain import run_job
from fjord.jobspec import JobSpec
from fjord.lineage import track_run
from fjord.projects import get_project

_CODE = [Path(__file__)]


class MaintenanceSpec(JobSpec):
    project: str
    groups: str | None = Field(default=None, description="comma-separated group names (default: all)")
    retention_hours: float = Field(default=168.0, ge=0, description="keep removed files this long")
    compact: bool = True
    vacuum: bool = True


@dataclass
class MaintenanceResult:
    run_id: str
    reports: list[str] = field(default_factory=list)
    compacted: dict[str, int] = field(default_factory=dict)
    vacuumed: int = 0

    def summary(self) -> str:
        return f"maintenance run {self.run_id}: " + "; ".join(self.reports or ["no feature groups"])


def run(spec: MaintenanceSpec) -> MaintenanceResult:
    project = get_project(spec.project)
    store = featurestore.connect(project.name)
    wanted = {g.strip() for g in spec.groups.split(",")} if spec.groups else None
    groups = [
        g for g in store.get_feature_groups() if not g.read_only and (wanted is None or g.name in wanted)
    ]
    if wanted:
        missing = wanted - {g.name for g in groups}
        if missing:
            raise featurestore.FeatureStoreError(
                f"project {project.name} has no writable groups {sorted(missing)}"
            )
    with track_run(
        project,
        "featurestore.maintenance",
        params=spec.model_dump(mode="json"),
        code=_CODE,
        **spec.run_tree(),
    ) as record:
        result = MaintenanceResult(record.run_id)
        for group in groups:
            report = group.compact(run_id=record.run_id) if spec.compact else MaintenanceReport(group.ref)
            if report.compacted_into is not None:
                result.compacted[group.ref] = report.compacted_into
                record.add_output(group.location, str(report.compacted_into), kind="feature_group")
            if spec.vacuum:
                swept = group.vacuum(spec.retention_hours)
                report.vacuumed, report.kept_versions = swept.vacuumed, swept.kept_versions
                result.vacuumed += swept.vacuumed
            result.reports.append(report.summary())
        return result


if __name__ == "__main__":
    sys.exit(run_job(MaintenanceSpec, run, __doc__))

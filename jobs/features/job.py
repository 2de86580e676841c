"""The feature pipeline job: a feature view and a new training dataset of it.

``run(FeaturesSpec(project="fraud"))`` creates (or finds) the feature view of a definition
(:mod:`jobs.features.views`: built in, or a YAML file) over the project's feature groups, then
materialises a point-in-time training dataset version from the groups' latest commits (or as of a
time window), recorded in the registry with its URI and in the lineage with the exact commits read.
What ``fjord run`` and the training DAG call between the ETL and training.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field

import featurestore
from featurestore.query import Query
from fjord.errors import FjordError, NotFoundError
from fjord.jobspec import JobSpec
from jobs.features.views import BUILT_IN, ViewDefinition, load_definition


class FeaturesError(FjordError):
    """The feature view cannot be built as defined (unknown group or feature, bad definition)."""

    exit_code = 2


class FeaturesSpec(JobSpec):
    """Which feature view, and which training data of it."""

    project: str
    view: str = Field(default="fraud_demo", description=f"a built-in view ({', '.join(BUILT_IN)})")
    definition: Path | None = Field(default=None, description="a YAML view definition instead of --view")
    data_format: Literal["parquet", "tfrecord"] = "parquet"
    start_time: datetime | None = Field(default=None, description="only rows at or after this time")
    end_time: datetime | None = Field(default=None, description="only rows before this time")


@dataclass
class FeaturesResult:
    run_id: str
    view: str
    view_version: int
    training_dataset_version: int
    uri: str
    rows: int
    commits: dict[str, int]
    label_rate: float | None

    def summary(self) -> str:
        rate = f", label rate {self.label_rate:.2%}" if self.label_rate is not None else ""
        return (
            f"feature view {self.view} v{self.view_version}: training dataset "
            f"v{self.training_dataset_version}, {self.rows:,} rows{rate}, from commits {self.commits}; "
            f"{self.uri}"
        )


def _definition(spec: FeaturesSpec) -> ViewDefinition:
    if spec.definition is not None:
        return load_definition(spec.definition)
    if spec.view not in BUILT_IN:
        raise FeaturesError(
            f"no built-in feature view {spec.view!r} (built in: {', '.join(BUILT_IN)})",
            hint="or pass --definition FILE.yaml",
        )
    return BUILT_IN[spec.view]


def build_query(store: featurestore.FeatureStore, definition: ViewDefinition) -> Query:
    """The definition's query over ``store``'s feature groups."""

    def group(name: str, version: int) -> featurestore.FeatureGroup:
        try:
            return store.get_feature_group(name, version)
        except NotFoundError as exc:
            raise FeaturesError(
                f"feature view {definition.name}: {exc}", hint="run the ETL job first"
            ) from None

    base = definition.base
    query = group(base.group, base.version).select(base.features)
    for join in definition.joins:
        if not join.keys:
            raise FeaturesError(f"feature view {definition.name}: the join of {join.group} needs its keys")
        query = query.join(group(join.group, join.version).select(join.features), on=join.keys)
    return query


def ensure_view(project: str, ref: str) -> featurestore.FeatureView:
    """The feature view ``ref`` (``VIEW`` or ``VIEW/VERSION``) of ``project``; a built-in definition is
    created over the project's groups if it does not exist yet."""
    from jobs.serve.features import view_version

    name, version = view_version(ref, f"feature view {ref!r}")
    store = featurestore.connect(project)
    definition = BUILT_IN.get(name)
    if definition is None or definition.version != version:
        return store.get_feature_view(name, version)
    return store.get_or_create_feature_view(
        definition.name, definition.version, query=build_query(store, definition), labels=definition.labels,
        description=definition.description,
    )  # fmt: skip


def run(spec: FeaturesSpec) -> FeaturesResult:
    """Create the view if needed and a new training dataset version of it."""
    definition = _definition(spec)
    store = featurestore.connect(spec.project)
    query = build_query(store, definition)
    view = store.get_or_create_feature_view(
        definition.name,
        definition.version,
        query=query,
        labels=definition.labels,
        description=definition.description,
    )
    version, record = view.create_training_data(
        spec.data_format,
        start_time=spec.start_time,
        end_time=spec.end_time,
        **spec.run_tree(),
    )
    dataset = view.read_training_dataset(version)
    rate = None
    if len(definition.labels) == 1 and dataset.num_rows:
        labels = dataset.column(definition.labels[0]).to_pandas()
        rate = float(labels.mean())
    return FeaturesResult(
        run_id=record.run_id,
        view=definition.name,
        view_version=definition.version,
        training_dataset_version=version,
        uri=view.training_dataset_uri(version),
        rows=dataset.num_rows,
        commits=view.training_dataset_commits(version),
        label_rate=rate,
    )

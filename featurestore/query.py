"""Queries: features selected from feature groups and joined point-in-time.

>>> q = labels_fg.select_all().join(tx_fg.select(["amount_sum_4h"]), on=["cc_num"])  # doctest: +SKIP
>>> q.read()                                                                            # doctest: +SKIP

A join is "as of" the left-most group's event time (see :mod:`featurestore.engines.base`). Join keys
must cover the joined group's whole primary key, so that each left row matches at most one row per
event time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from featurestore.engines import JoinPlan, Source, join_engine
from featurestore.errors import FeatureStoreError

if TYPE_CHECKING:
    from featurestore.feature_group import FeatureGroup


@dataclass(frozen=True)
class _Join:
    query: Query
    keys: tuple[tuple[str, str], ...]  # (left column, right column)
    prefix: str
    max_lookback: timedelta | None


def _check_features(group: FeatureGroup, features: list[str]) -> None:
    known = [f.name for f in group.schema]
    unknown = [f for f in features if f not in known]
    if unknown:
        raise FeatureStoreError(f"{group}: unknown feature(s) {unknown} (features: {known})")


class Query:
    """Selected features of one feature group, with point-in-time joins to others."""

    def __init__(self, group: FeatureGroup, features: list[str], joins: tuple[_Join, ...] = ()) -> None:
        _check_features(group, features)
        self.group = group
        self.features = list(features)
        self.joins = joins

    def __repr__(self) -> str:
        joined = "".join(f" JOIN {j.query.group}" for j in self.joins)
        return f"Query({self.group}{joined})"

    def join(
        self,
        other: Query,
        on: list[str] | None = None,
        *,
        left_on: list[str] | None = None,
        right_on: list[str] | None = None,
        prefix: str = "",
        max_lookback: timedelta | None = None,
    ) -> Query:
        """Join ``other`` point-in-time on ``on`` (or ``left_on`` = ``right_on``); ``other`` must be
        a plain query of one group. ``max_lookback`` bounds how stale a joined value may be."""
        if other.joins:
            raise FeatureStoreError("join a query of one feature group at a time (its joins would be lost)")
        right = other.group
        if on is not None:
            left_on = right_on = list(on)
        elif left_on is None and right_on is None:
            left_on = right_on = right.primary_key
        if left_on is None or right_on is None or len(left_on) != len(right_on):
            raise FeatureStoreError("give 'on', or 'left_on' and 'right_on' of the same length")
        left_names = {f.name for f in self.group.schema}
        missing_left = [k for k in left_on if k not in left_names]
        if missing_left:
            raise FeatureStoreError(
                f"cannot join {right} to {self.group}: no common key: {self.group} lacks {missing_left}"
            )
        _check_features(right, list(right_on))
        if set(right_on) != set(right.primary_key):
            raise FeatureStoreError(
                f"join keys {list(right_on)} must be the whole primary key {right.primary_key} of {right}"
            )
        joined = _Join(other, tuple(zip(left_on, right_on, strict=True)), prefix, max_lookback)
        query = Query(self.group, self.features, (*self.joins, joined))
        query.output_columns()  # reject name clashes now, not when reading
        return query

    # -- the plan ------------------------------------------------------------------------------------

    def groups(self) -> list[FeatureGroup]:
        return [self.group, *(j.query.group for j in self.joins)]

    def output_columns(self) -> list[str]:
        head = [*self.group.primary_key, self.group.event_time]
        columns = head + [f for f in self.features if f not in head]
        for join in self.joins:
            for feature in join.query.features:
                name = join.prefix + feature
                if name in columns:
                    raise FeatureStoreError(
                        f"feature {name!r} of {join.query.group} clashes with one already selected",
                        hint="pass prefix='...' to join()",
                    )
                columns.append(name)
        return columns

    def plan(
        self,
        commits: dict[str, int] | None = None,
        *,
        exclude: list[str] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> tuple[JoinPlan, dict[str, int]]:
        """The join plan at ``commits`` (group ref -> commit id; default: each group's latest), and
        the commits it reads."""
        commits = dict(commits or {})
        exclude = exclude or []
        sources, used = [], {}
        for group, features, keys, lookback, prefix in self._parts():
            snapshot = group.snapshot(commits.get(group.ref))
            used[group.ref] = snapshot.version
            kept = [f for f in features if prefix + f not in exclude]
            sources.append(
                Source(
                    files=snapshot.file_uris,
                    event_time=group.event_time,
                    columns=tuple(kept),
                    keys=keys,
                    max_lookback=lookback,
                    output=tuple(prefix + f for f in kept),
                    schema=snapshot.schema,
                )
            )
        start, end = as_time(start_time, "start_time"), as_time(end_time, "end_time")
        if start is not None and end is not None and start >= end:
            raise FeatureStoreError(
                f"start_time {start.isoformat()} is not before end_time {end.isoformat()}"
            )
        return JoinPlan(sources[0], tuple(sources[1:]), start, end), used

    def _parts(
        self,
    ) -> list[tuple[FeatureGroup, list[str], tuple[tuple[str, str], ...], timedelta | None, str]]:
        left_keys = tuple((k, k) for k in self.group.primary_key)
        parts = [(self.group, self.features, left_keys, None, "")]
        parts += [(j.query.group, j.query.features, j.keys, j.max_lookback, j.prefix) for j in self.joins]
        return parts

    def read(self, *, engine: str | None = None, dataframe_type: str = "pandas") -> Any:
        """Execute the query on the latest commits (point-in-time)."""
        plan, _ = self.plan()
        table = join_engine(engine).to_arrow(plan)
        return table.to_pandas() if dataframe_type == "pandas" else table

    # -- stored form (feature views keep their query) ---------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def ref(group: FeatureGroup) -> dict[str, Any]:
            return {"project": group.project, "name": group.name, "version": group.version}

        return {
            "group": ref(self.group),
            "features": self.features,
            "joins": [
                {
                    "group": ref(j.query.group),
                    "features": j.query.features,
                    "keys": [list(k) for k in j.keys],
                    "prefix": j.prefix,
                    "max_lookback_s": j.max_lookback.total_seconds() if j.max_lookback else None,
                }
                for j in self.joins
            ],
        }


def as_time(value: Any, what: str) -> datetime | None:
    """A time bound as the feature store takes one everywhere: a datetime, a date, a pandas
    Timestamp or an ISO 8601 string ("2026-11-01", "2026-11-01T00:00:00Z"); a naive one is UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise FeatureStoreError(
                f"{what} {value!r} is not an ISO 8601 time (2026-11-01T00:00:00Z)"
            ) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):  # pandas.Timestamp is a datetime
        raise FeatureStoreError(f"{what} must be a datetime, a date or an ISO 8601 string, not {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)

"""The join engine boundary and the plan every engine executes.

Point-in-time semantics, the same in every engine: the result has exactly one row per row of the left
(label) source, in the order (event time, keys). For each joined source and each left row, the
features come from the right row with equal join keys and the latest event time at or before the left
row's event time (equal time included), never a later one. No such row, or one older than the
source's ``max_lookback``, gives nulls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pyarrow as pa

from fjord.fs import SharedFS
from fjord.plugins import PluginConfig


@dataclass(frozen=True)
class Source:
    """One feature group's snapshot as the plan reads it."""

    files: tuple[str, ...]
    event_time: str
    columns: tuple[str, ...]
    # Join: pairs (left column, this source's column). Left source: its primary key, paired with itself.
    keys: tuple[tuple[str, str], ...]
    max_lookback: timedelta | None = None
    # Output name of each of ``columns`` (the selected features, possibly prefixed).
    output: tuple[str, ...] = ()
    schema: pa.Schema | None = None

    def outputs(self) -> tuple[str, ...]:
        return self.output or self.columns


@dataclass(frozen=True)
class JoinPlan:
    left: Source
    joins: tuple[Source, ...] = ()
    start_time: datetime | None = None
    end_time: datetime | None = None
    order: tuple[str, ...] = field(default=())

    def output_columns(self) -> list[str]:
        left_keys = [k for k, _ in self.left.keys]
        head = [*left_keys, self.left.event_time]
        return (
            head
            + [c for c in self.left.outputs() if c not in head]
            + [c for j in self.joins for c in j.outputs()]
        )


class JoinEngine(ABC):
    """Executes a :class:`JoinPlan`; built from its config (``featurestore.join_engine``)."""

    name: str

    def __init__(self, config: PluginConfig | None = None) -> None:
        self.config = config

    @abstractmethod
    def to_arrow(self, plan: JoinPlan) -> pa.Table:
        """The joined rows, in memory (batch data, small training sets)."""

    @abstractmethod
    def write_parquet(
        self,
        plan: JoinPlan,
        out: SharedFS,
        tap: Callable[[pa.Table], None] | None = None,
        while_writing: Callable[[], None] | None = None,
    ) -> int:
        """Write the joined rows as Parquet into ``out`` without holding them in memory; the row count.
        ``tap`` sees the rows written, in one or more tables (at least one, empty if no rows): what
        a training dataset's statistics are computed from in the same pass. ``while_writing`` runs
        once ``tap`` has seen every row, while the file may still be being written (its statistics
        then cost no extra time); its exception fails the write."""

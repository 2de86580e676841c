"""Early stopping of hopeless trials: the median stopping rule (as Vizier and Katib define it).

A running trial is stopped at step ``s`` when its best value so far is strictly worse than the
median of the running averages, up to step ``s``, of the trials that completed. Nothing is stopped
before ``min_trials`` trials completed or before ``start_step``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["max", "min"]


class MedianStopping(BaseModel):
    """Settings of the median stopping rule; ``enabled=False`` turns it off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    min_trials: int = Field(default=3, ge=1, description="completed trials needed before any stop")
    start_step: int = Field(default=2, ge=0, description="no stop before this step")

    def should_stop(
        self,
        curve: Sequence[tuple[int, float]],
        completed: Sequence[Sequence[tuple[int, float]]],
        direction: Direction,
    ) -> bool:
        """Whether a trial with ``curve`` (its (step, value) reports so far) is hopeless."""
        if not self.enabled or not curve or len(completed) < self.min_trials:
            return False
        step = curve[-1][0]
        if step < self.start_step:
            return False
        prefixes = [[v for s, v in other if s <= step] for other in completed]
        averages = [statistics.fmean(prefix) for prefix in prefixes if prefix]
        if len(averages) < self.min_trials:
            return False
        median = statistics.median(averages)
        values = [v for _, v in curve]
        best = max(values) if direction == "max" else min(values)
        return best < median if direction == "max" else best > median

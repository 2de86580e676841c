"""What every stage job's spec has in common: strict fields, and its place in a run tree.

``run_id`` names the job's run record (an orchestrator passes a stable id, so a retried task rewrites
its record instead of adding one); ``parent_run_id`` links it to the run it is part of (a DAG run, or
the ``fjord run`` job), so a pipeline run, its tasks and their runs are one tree in the lineage
(:func:`fjord.lineage.child_runs`).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


class JobSpec(BaseModel):
    """The base of every stage job's typed spec."""

    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(default=None, description="this run's id (default: a new one)")
    parent_run_id: str | None = Field(default=None, description="the run this one is part of")

    @field_validator("run_id", "parent_run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        if value is not None and not _RUN_ID.match(value):
            raise ValueError(
                f"{value!r} is not a run id: up to 128 letters, digits and _.:+-, the first a letter or digit"
            )
        return value

    def run_tree(self) -> dict[str, str | None]:
        """``run_id`` and ``parent_run_id``, as :func:`fjord.lineage.track_run` takes them."""
        return {"run_id": self.run_id, "parent_run_id": self.parent_run_id}

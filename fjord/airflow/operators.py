"""The operator of every Fjord stage task: it holds the templated arguments, the hook does the work.

>>> FjordJobOperator(task_id="train", stage="train", args={"project": "fraud"})  # doctest: +SKIP

``args`` are the fields of the stage job's spec (``jobs/<stage>/main.py --help``); Jinja renders
them, so a task takes the previous one's references with ``ti.xcom_pull``. The return value (the
job's result: URIs, versions, run ids) goes to XCom.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Context

from fjord.airflow.client import dag_run_record_id, task_run_id
from fjord.airflow.hook import FjordJobHook


class FjordJobOperator(BaseOperator):
    """Run one Fjord stage job (see :mod:`fjord.airflow.hook`)."""

    template_fields = ("args",)
    ui_color = "#d6ecf3"

    def __init__(self, *, stage: str, args: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self.args = args

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None else -1
        run_id = task_run_id(self.stage, ti.dag_id, ti.run_id, ti.task_id, map_index)
        parent = dag_run_record_id(ti.dag_id, ti.run_id)
        cache = bool((context.get("params") or {}).get("cache", True))  # the DAG's param, if it has one
        return FjordJobHook().run(self.stage, self.args, run_id=run_id, parent_run_id=parent, cache=cache)

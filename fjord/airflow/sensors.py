"""A deferrable wait for a file on the shared filesystem (``file://``, ``hdfs://``, ``s3://``).

Airflow's ``FileSensor`` sees only the worker's local disk. :class:`SharedFileSensor` asks Fjord's
shared filesystem, so the same DAG waits for a landing batch's ``_SUCCESS`` marker on HDFS or S3.
Deferred, it holds no worker slot: the triggerer polls (:class:`SharedFileTrigger`, an asyncio loop
that checks every ``poke_interval`` seconds) and resumes the task when the file is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.triggers.base import BaseTrigger, TriggerEvent

from fjord.fs import SharedFS
from fjord.projects import get_project


def _exists(uri: str) -> bool:
    parent, name = uri.rstrip("/").rsplit("/", 1)
    return SharedFS(parent).exists(name)


class SharedFileTrigger(BaseTrigger):
    """Fires once the file at ``uri`` exists."""

    def __init__(self, uri: str, poke_interval: float = 10.0) -> None:
        super().__init__()
        self.uri = uri
        self.poke_interval = poke_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "uri": self.uri,
            "poke_interval": self.poke_interval,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while not await asyncio.to_thread(_exists, self.uri):
            await asyncio.sleep(self.poke_interval)
        yield TriggerEvent({"uri": self.uri})


class SharedFileSensor(BaseSensorOperator):
    """Wait for ``path`` (relative to the project's root) to exist; returns its URI.

    ``deferrable=True`` (the default) hands the wait to the triggerer.
    """

    template_fields = ("project", "path")
    ui_color = "#e8f4fa"

    def __init__(self, *, project: str, path: str, deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project = project
        self.path = path
        self.deferrable = deferrable

    def _uri(self) -> str:
        return get_project(self.project).fs.uri(self.path)

    def poke(self, context: Context) -> bool:
        return _exists(self._uri())

    def execute(self, context: Context) -> Any:
        uri = self._uri()
        if not self.deferrable:
            super().execute(context)
            return uri
        if _exists(uri):
            return uri
        self.log.info("waiting for %s (deferred to the triggerer)", uri)
        self.defer(
            trigger=SharedFileTrigger(uri, self.poke_interval),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        uri = (event or {}).get("uri")
        self.log.info("found %s", uri)
        return uri

"""What feature groups and feature views share: a registry record with a project, a name and a version."""

from __future__ import annotations

from typing import Any


class Versioned:
    """A facade object over a registry record (``_record``) named by project, name and version."""

    _record: Any

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.project}.{self.name}, version={self.version})"

    @property
    def name(self) -> str:
        return str(self._record.name)

    @property
    def version(self) -> int:
        return int(self._record.version)

    @property
    def project(self) -> str:
        return str(self._record.project)

    @property
    def description(self) -> str:
        return str(self._record.description)

    @property
    def id(self) -> int:
        assert self._record.id is not None, "a stored record has an id"
        return int(self._record.id)

"""The online store boundary."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence


class OnlineStore(ABC):
    """Rows of encoded feature values, addressed by (table, key), newest event time wins.

    ``table`` names a feature group version; ``key`` is its encoded primary key; ``event_time`` is in
    microseconds. A write never replaces a row with an older event time, so late or replayed inserts
    cannot roll the online value back.
    """

    @abstractmethod
    def write(self, table: str, rows: Iterable[tuple[str, int, bytes]]) -> int:
        """Upsert ``(key, event_time, value)`` rows; how many were written."""

    @abstractmethod
    def read(self, requests: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The values of ``(table, key)`` pairs, in order (None where absent), in one round trip."""

    @abstractmethod
    def drop(self, table: str) -> None:
        """Remove every row of ``table``."""

    @abstractmethod
    def ping(self) -> None:
        """Raise if the store cannot be reached."""

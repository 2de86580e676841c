"""The online store's key codec: one encoding of a primary key, written by DuckDB, looked up by Python.

A key is the JSON array of its values, compact: ``[4111,"café"]``. DuckDB's ``to_json`` writes it on
insert (fast, for millions of rows) and :func:`encode_key` writes the same text for a lookup. Values
are first made plain on both sides so the texts agree byte for byte: a timestamp becomes its epoch
microseconds (UTC; a naive time is taken as UTC), a date its ISO text; strings keep their non-ASCII
characters as UTF-8 and escape control characters as ``\\u00XX`` with upper-case hex, as DuckDB does.
A property test holds both sides to it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

# A \\uXXXX escape preceded by an even number of backslashes (an odd number would make it text).
_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-f]{4})")
_TIMESTAMP_TYPES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S")


def _plain(value: Any) -> Any:
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    elif hasattr(value, "item"):  # numpy scalars, numpy datetime64 included
        value = value.item()
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        delta = aware - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, date):
        return value.isoformat()
    return value


def encode_key(values: Sequence[Any]) -> str:
    """The online key of primary-key ``values``, as :func:`encode_key_sql` writes it on insert."""
    text = json.dumps([_plain(v) for v in values], ensure_ascii=False, separators=(",", ":"))
    return _ESCAPE.sub(lambda m: m.group(1) + "\\u" + m.group(2).upper(), text)


def encode_key_sql(columns: Sequence[tuple[str, str]]) -> str:
    """A DuckDB expression of the online key of ``columns`` ((quoted name, DuckDB type) pairs)."""
    parts = []
    for name, kind in columns:
        if kind.upper() in _TIMESTAMP_TYPES:
            parts.append(f"epoch_us({name})")
        elif kind.upper() == "DATE":
            parts.append(f"strftime({name}, '%Y-%m-%d')")
        else:
            parts.append(name)
    # Each value encoded alone: a DuckDB list would cast mixed types (an integer and a string) to one.
    return "'[' || " + " || ',' || ".join(f"to_json({part})::VARCHAR" for part in parts) + " || ']'"

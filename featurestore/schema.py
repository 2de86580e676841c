"""Feature schemas: normalising incoming data and checking it against a feature group.

Types are normalised so that every engine (delta-rs, DuckDB, Spark, pandas) sees the same table:
integers become int64, floats float64, strings utf8, and timestamps microseconds in UTC. Naive
timestamps are taken as UTC. Within a version, a new nullable feature may be added; any other change
(a changed type, a missing feature) needs a new version.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import BaseModel

from featurestore.errors import SchemaError

TIMESTAMP = pa.timestamp("us", tz="UTC")


class Feature(BaseModel):
    """One column of a feature group."""

    name: str
    type: str
    description: str = ""
    primary: bool = False
    event_time: bool = False


def _normal_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _normal_type(t.value_type)
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_timestamp(t):
        return TIMESTAMP
    if pa.types.is_date64(t):
        return pa.date32()
    return t


def normalise(table: pa.Table) -> pa.Table:
    """``table`` with its columns cast to the normal types (see the module docstring)."""
    fields, columns = [], []
    for field, column in zip(table.schema, table.columns, strict=True):
        target = _normal_type(field.type)
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            column = column.cast(pa.timestamp("us")).cast(TIMESTAMP)  # naive: taken as UTC
        elif target != field.type:
            try:
                column = column.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"column {field.name!r}: cannot read {field.type} as {target}: {exc}"
                ) from None
        fields.append(pa.field(field.name, target))
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def normal_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _normal_type(f.type)) for f in schema])


def type_name(t: pa.DataType) -> str:
    return str(t)


def features_of(
    schema: pa.Schema, primary_key: list[str], event_time: str, descriptions: dict[str, str] | None = None
) -> list[Feature]:
    """The features of a new feature group, from its first data's (normalised) schema."""
    descriptions = descriptions or {}
    return [
        Feature(
            name=f.name,
            type=type_name(f.type),
            description=descriptions.get(f.name, ""),
            primary=f.name in primary_key,
            event_time=f.name == event_time,
        )
        for f in schema
    ]


def check_insert(
    schema: pa.Schema, features: list[Feature], group: str, primary_key: list[str], event_time: str
) -> list[pa.Field]:
    """Check an insert's (normalised) ``schema`` against ``features``; the new features it adds.

    Raises :class:`SchemaError` naming the column and the types.
    """
    for column in [*primary_key, event_time]:
        if column not in schema.names:
            role = "event-time" if column == event_time else "primary-key"
            raise SchemaError(f"{group}: the data has no {role} column {column!r} (columns: {schema.names})")
    event_type = schema.field(event_time).type
    if not pa.types.is_timestamp(event_type):
        raise SchemaError(f"{group}: event-time column {event_time!r} is {event_type}, expected a timestamp")
    duplicates = {n for n in schema.names if schema.names.count(n) > 1}
    if duplicates:
        raise SchemaError(f"{group}: duplicate column names {sorted(duplicates)}")
    known = {f.name: f for f in features}
    missing = [name for name in known if name not in schema.names]
    if missing:
        raise SchemaError(
            f"{group}: the data lacks feature(s) {missing}",
            hint="every insert carries every feature; removing one needs a new version",
        )
    for name, feature in known.items():
        incoming = type_name(schema.field(name).type)
        if incoming != feature.type:
            raise SchemaError(
                f"{group}: column {name!r} is {incoming}, but the feature group stores {feature.type}",
                hint="an incompatible change needs a new version of the feature group",
            )
    return [field for field in schema if field.name not in known]

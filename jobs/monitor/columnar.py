"""The monitor's columnar path: a partition's records parsed at once by Arrow's JSON reader, then
checked and counted with Arrow and numpy, with no Python per record.

The per-record path (:func:`jobs.monitor.stream.count_partition`: orjson, :func:`~jobs.monitor.stream.check`
and appends) stays the definition. This path takes only the records it can show it counts exactly
as that one would, and hands every other record to it:

- **Before parsing**, a record must start with ``{`` and end with ``}``.
- **Parsing**: Arrow's reader must accept the partition's records (it refuses what orjson refuses,
  and also a key twice in one object, or a field whose type changes between records), give one row
  per record, and no NaN or infinity (Arrow reads the tokens ``NaN`` and ``Inf``, JSON does not);
  otherwise every record of the partition takes the per-record path.
- **After parsing**, a row is counted here only when every field the check reads has the type the
  check requires (``modelVersion`` an integer, not a float or a boolean, say), a request's inputs
  are all present lists of one length, and it carries no input-rule ``violations`` and no shadow's
  ``answered`` list. Any other row, valid or not, goes to the per-record path.

A window's counters are additive (counts, sums, minima, maxima), so the two paths' counters of one
window add up to what either would have counted alone; ``tests/unit/monitor/test_columnar.py``
checks that on records built to hit each rule.

Measured on 50,000 inference log records of 15 features (bench/monitor.py's), with the archive's
rows: the per-record path 0.36 s, then the Parquet file; this one 0.23 s with the file, of which
Arrow's reader is 0.09 s (docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Columns:
    """Records counted here, as arrays over the rows kept (``kept``: their rows in the partition)."""

    kept: np.ndarray
    kind: np.ndarray  # True for a request
    model: pa.Array
    version: np.ndarray
    ts: np.ndarray
    http: np.ndarray  # a response's httpCode (0 for a request)
    latency: np.ndarray  # NaN where absent
    inputs: dict[str, pa.ListArray] = field(default_factory=dict)  # per feature, null for a response
    scores: pa.ListArray | None = None  # a response's scores list, null where it has none
    archive: dict[str, pa.Array] = field(default_factory=dict)  # the archived head fields


def _candidates(values: pa.Array) -> np.ndarray:
    """The rows that start with ``{`` and end with ``}``: maybe one JSON object each."""
    ok = pc.and_(pc.starts_with(values, "{"), pc.ends_with(values, "}"))
    return np.asarray(pc.fill_null(ok, False).to_numpy(zero_copy_only=False), dtype=bool)


def _parse(values: pa.Array) -> pa.Table | None:
    """``values`` (each starting with ``{`` and ending with ``}``) as one table, a row each, or None
    when Arrow's reader refuses them or they are not one object per record.

    The records are joined by newlines and read as one stream of objects. No object can span two
    records: a record ends with ``}``, where an open object or array may only go on with ``,`` or a
    closing bracket, and the next record starts with ``{``. So a record is either refused, or one
    object, or several (more rows than records). Line breaks inside a record are whitespace to the
    reader, as to JSON; one that falls on a block's edge makes the reader refuse the block."""
    import pyarrow.json as pj

    lines = pc.binary_join_element_wise(values, pa.scalar(b"\n"), b"")  # each record and its newline
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    body = lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    if body.size >= 1 << 30:
        return None
    try:
        table = pj.read_json(
            pa.BufferReader(body), read_options=pj.ReadOptions(use_threads=False, block_size=body.size + 1)
        )
        # Checked whole: on the e2e's inference log, pyarrow 25.0.1's reader returned a struct child whose
        # offsets ran past its values (an invalid array, found when its chunks were combined).
        table.validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowIndexError):
        return None
    if table.num_rows != len(values) or not all(_finite(column.combine_chunks()) for column in table.columns):
        return None
    return table


def _finite(array: pa.Array) -> bool:
    """No NaN or infinity in ``array`` or what it nests: Arrow's reader reads the tokens ``NaN``,
    ``Inf`` and ``Infinity``, which JSON (and orjson) refuse; a number too large for a double it
    refuses, as orjson does. So a non-finite value marks such a token."""
    if pa.types.is_floating(array.type):
        return not pc.any(pc.invert(pc.is_finite(array))).as_py()
    if pa.types.is_list(array.type):
        return _finite(array.flatten())
    if pa.types.is_struct(array.type):
        return all(_finite(array.field(i)) for i in range(array.type.num_fields))
    return True


def _column(table: pa.Table, name: str) -> pa.Array | None:
    return table.column(name).combine_chunks() if name in table.column_names else None


def _valid(array: pa.Array | None, *types: Any) -> np.ndarray | None:
    """Where ``array`` holds a value of one of ``types`` (an Arrow type test); None if absent."""
    if array is None:
        return None
    if not any(test(array.type) for test in types):
        return np.zeros(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _null(array: pa.Array | None, n: int) -> np.ndarray:
    """Where ``array`` (a field) is absent or null."""
    if array is None:
        return np.ones(n, dtype=bool)
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(array: pa.Array) -> np.ndarray:
    """An integer or floating array as float64, NaN where null."""
    return np.asarray(array.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype="float64")


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _list(t: pa.DataType) -> bool:
    return pa.types.is_list(t)


def columns(values: pa.Array, output: str | None, categorical: set[str]) -> Columns | None:
    """The partition's records (``values``, binary) that this path counts, or None for none.
    ``categorical``: the features some reference counts by value, whose text a float would change
    (Arrow reads ``[1]`` beside ``[1.5]`` as 1.0, the per-record path keeps the integer)."""
    candidates = _candidates(values)
    if not candidates.any():
        return None
    rows = np.flatnonzero(candidates)
    picked = values.take(pa.array(rows))
    try:  # the archive keeps the record as text; a record that is not UTF-8 is the per-record path's
        text = picked.cast(pa.string())
    except pa.ArrowInvalid:
        return None
    table = _parse(picked)
    if table is None:
        return None
    n = table.num_rows
    kind, model = _column(table, "type"), _column(table, "modelName")
    version, ts = _column(table, "modelVersion"), _column(table, "requestTimestamp")
    required = [
        _valid(kind, pa.types.is_string),
        _valid(model, pa.types.is_string),
        _valid(version, pa.types.is_int64),
        _valid(ts, pa.types.is_int64),
    ]
    if any(r is None for r in required):
        return None
    keep = np.logical_and.reduce(required)
    assert kind is not None and model is not None and version is not None and ts is not None
    is_request = np.asarray(pc.fill_null(pc.equal(kind, "request"), False).to_numpy(zero_copy_only=False))
    is_response = np.asarray(pc.fill_null(pc.equal(kind, "response"), False).to_numpy(zero_copy_only=False))
    keep &= is_request | is_response
    # the archived fields: absent, null or of the type the archive's column holds
    optional = {"inferenceId": pa.types.is_string, "api": pa.types.is_string,
                "httpCode": pa.types.is_int64, "latencyMs": _numeric}  # fmt: skip
    found = {name: _column(table, name) for name in optional}
    for name, test in optional.items():
        column = found[name]
        if column is not None:
            keep &= _null(column, n) | _valid(column, test)
    http = found["httpCode"]
    if http is not None and pa.types.is_int64(http.type):  # the archive's column is int32
        in_range = pc.fill_null(pc.and_(pc.greater_equal(http, -(2**31)), pc.less(http, 2**31)), True)
        keep &= np.asarray(in_range.to_numpy(zero_copy_only=False))
    for name in ("violations", "answered"):  # input rules flagged, a shadow's batch: per record
        keep &= _null(_column(table, name), n)
    # a response: an httpCode, and scores the per-record path would read the same way
    keep &= ~is_response | (_valid(http, pa.types.is_int64) if http is not None else False)
    outputs = _column(table, "outputs")
    scores = None
    if outputs is not None and pa.types.is_struct(outputs.type) and outputs.type.num_fields:
        names = [outputs.type.field(i).name for i in range(outputs.type.num_fields)]
        has_outputs = ~_null(outputs, n)
        if not output and len(names) > 1:  # the record's first output: its own key order
            keep &= ~(is_response & has_outputs)
        chosen = output or names[0]
        if chosen in names:
            child = pc.struct_field(outputs, names.index(chosen))
            items = child.type.value_type if _list(child.type) else None
            if items is not None and (_numeric(items) or pa.types.is_null(items)):
                scores = child
            else:  # a list of text, or not a list: the per-record path decides
                keep &= ~(is_response & ~_null(child, n))
    elif outputs is not None and not pa.types.is_struct(outputs.type):
        keep &= ~(is_response & ~_null(outputs, n))
    # a request: inputs, every one present, a list, all of one length
    inputs = _column(table, "inputs")
    features: dict[str, pa.ListArray] = {}
    if inputs is None or not pa.types.is_struct(inputs.type) or not inputs.type.num_fields:
        keep &= ~is_request
    else:
        keep &= ~is_request | ~_null(inputs, n)
        length = None
        for i in range(inputs.type.num_fields):
            name = inputs.type.field(i).name
            child = pc.struct_field(inputs, i)
            if not _list(child.type) or (name in categorical and pa.types.is_floating(child.type.value_type)):
                keep &= ~is_request
                break
            present = _valid(child, _list)
            assert present is not None
            keep &= ~is_request | present
            lengths = np.asarray(pc.fill_null(pc.list_value_length(child), -1).to_numpy(zero_copy_only=False))
            if length is None:
                length = lengths
            else:
                keep &= ~is_request | (lengths == length)
            features[name] = child
    if not keep.any():
        return None
    taken = pa.array(np.flatnonzero(keep))
    latency = found["latencyMs"]
    codes = http is not None and pa.types.is_int64(http.type)
    http_values = (np.asarray(pc.fill_null(http, 0).to_numpy(zero_copy_only=False), dtype="int64")
                   if codes else np.zeros(n, dtype="int64"))  # fmt: skip
    latency_values = (_numbers(latency) if latency is not None and _numeric(latency.type)
                      else np.full(n, np.nan))  # fmt: skip
    archive = {
        "inference_id": _string_or_null(found["inferenceId"], n).take(taken),
        "api": _string_or_null(found["api"], n).take(taken),
        "http_code": http.take(taken).cast(pa.int32()) if codes else pa.nulls(len(taken), pa.int32()),
        "latency_ms": pa.array(latency_values[keep], mask=np.isnan(latency_values[keep])),
        "value": text.take(taken),
    }
    return Columns(
        kept=rows[keep],
        kind=is_request[keep],
        model=model.take(taken),
        version=np.asarray(version.take(taken).to_numpy(zero_copy_only=False), dtype="int64"),
        ts=np.asarray(ts.take(taken).to_numpy(zero_copy_only=False), dtype="int64"),
        http=http_values[keep],
        latency=latency_values[keep],
        inputs={name: child.take(taken) for name, child in features.items()},
        scores=scores.take(taken) if scores is not None else None,
        archive=archive,
    )


def _string_or_null(array: pa.Array | None, n: int) -> pa.Array:
    return array if array is not None and pa.types.is_string(array.type) else pa.nulls(n, pa.string())


def flatten(lists: pa.ListArray, rows: np.ndarray) -> pa.Array:
    """The values of ``lists`` at ``rows``, in order, as one array."""
    return pc.list_flatten(lists.take(pa.array(rows)))


def values_of(array: pa.Array, categorical: bool = False) -> Any:
    """A flattened list's values as the per-record path holds them: float64 for numbers (NaN for
    null); Python values for anything else (text, booleans) and for a categorical feature."""
    if _numeric(array.type) and not categorical:
        return _numbers(array)
    return array.to_pylist()

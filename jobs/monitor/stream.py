"""The executor side of the monitor: inference log records -> window counters, dead letters, archive rows.

Spark's Kafka source hands each micro-batch to Spark; every partition of it is turned, on the
executors, into the counter rows of :mod:`jobs.monitor.windows`, ``(model, version, window, metric,
key, n, sum, min, max)``, into dead-letter rows for the records that cannot be counted, with the
reason, and (with ``archive``) into one row per valid record for the inference archive
(:mod:`jobs.monitor.archive`): its head fields and the record itself (``mapInArrow``). Spark then
adds the partitions' counters up by key; a few hundred counter rows per window reach the driver.

Why Python on the executors and not Spark SQL expressions: the per-value work is a binary search
of a value in its feature's grid. Spark SQL offers it only as a lambda over the edges (``filter``),
which Spark interprets per element, or as nested CASE expressions, which outgrow code generation at
15 features x 100 edges. Measured on 100,000 records of 15 features on 2 cores: ``from_json`` and
the lambda 19 s, the CASE tree 68 s, this (orjson + numpy ``searchsorted``) 2.8 s
(docs/monitoring.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fjord.evaluation import score_bins
from jobs.monitor.drift import grid_bin
from jobs.monitor.windows import LATENCY_BUCKETS_PER_DOUBLING, PREDICTION_BINS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger("fjord.monitor.stream")
COUNT, DEAD, FILE = "count", "dead", "file"  # the kinds of output rows
OUTPUT = pa.schema(
    [
        ("kind", pa.string()),
        ("model", pa.string()), ("version", pa.int64()), ("window", pa.int64()), ("metric", pa.string()),
        ("key", pa.string()), ("n", pa.int64()), ("s", pa.float64()), ("lo", pa.float64()),
        ("hi", pa.float64()),
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("value", pa.string()), ("reason", pa.string()),
        # the fields of an archived record (the model, version, Kafka position and record above too)
        ("inference_id", pa.string()), ("type", pa.string()), ("api", pa.string()),
        ("request_ms", pa.int64()), ("http_code", pa.int32()), ("latency_ms", pa.float64()),
    ]
)  # fmt: skip
ARCHIVED = ["inference_id", "type", "model", "version", "api", "request_ms", "http_code", "latency_ms",
            "value", "topic", "partition", "offset"]  # fmt: skip
COUNTER_KEY = ["model", "version", "window", "metric", "key"]  # a counter row's identity


class _Counts:
    """Counters of one partition: (model, version, window, metric, key) -> [n, sum, min, max]."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int, int, str, str], list[float]] = {}

    def add(self, head: tuple[str, int, int], metric: str, key: str, n: int = 1, total: float = 0.0,
            low: float | None = None, high: float | None = None) -> None:  # fmt: skip
        row = self.rows.get((*head, metric, key))
        if row is None:
            row = self.rows[(*head, metric, key)] = [0, 0.0, math.inf, -math.inf]
        row[0] += n
        row[1] += total
        if low is not None:
            row[2] = min(row[2], low)
        if high is not None:
            row[3] = max(row[3], high)


def _int(value: Any, bits: int = 64) -> int | None:
    """An integer that fits a signed ``bits``-bit column (JSON's integers do not always), else None."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _latency(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def check(record: Any) -> str | None:
    """Why a parsed record cannot be counted, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    kind = record.get("type")
    if kind not in ("request", "response"):
        return "type is neither request nor response"
    if not isinstance(record.get("modelName"), str):
        return "no modelName"
    if _int(record.get("modelVersion")) is None:
        return "no modelVersion (an integer)"
    if _int(record.get("requestTimestamp")) is None:
        return "no requestTimestamp (ms since the epoch)"
    if kind == "request":
        inputs = record.get("inputs")
        if not isinstance(inputs, dict) or not inputs:
            return "a request without inputs"
        rows = -1
        for column in inputs.values():  # one pass: this runs for every record
            if type(column) is not list:
                return "inputs are not name -> list of values"
            if rows != len(column):
                if rows >= 0:
                    return "inputs of unequal lengths"
                rows = len(column)
    elif _int(record.get("httpCode")) is None:
        return "a response without httpCode"
    return None


class _Window:
    """What one partition saw of one (model, version, window): raw fields, counted at the end."""

    __slots__ = ("events", "http", "latency", "rows", "scores", "values", "violations")

    def __init__(self) -> None:
        self.violations: list[str] = []  # the field of each input-rule violation (flag mode)
        self.events: list[int] = []
        self.http: list[int] = []
        self.latency: list[Any] = []
        self.scores: list[Any] = []
        self.rows = 0
        self.values: dict[str, list[Any]] = {}


def count_partition(
    records: list[tuple[bytes | None, str, int, int]],
    references: dict[tuple[str, int], dict[str, Any]],
    *,
    window_ms: int,
    watermark_ms: int,
    output: str | None,
    positive_threshold: float,
    archive: list[tuple[Any, ...]] | None = None,
) -> tuple[_Counts, list[tuple[str, int, int, str | None, str]]]:
    """The counters and the dead letters of (value, topic, partition, offset) records; with
    ``archive``, each valid record's archive row is appended to it (:data:`ARCHIVED`'s fields).

    Each record only appends its fields to its window's lists; the counting is vectorised per window
    (numpy) at the end: a Python loop per value would cost more than the parsing."""
    import orjson

    counts, dead = _Counts(), []
    windows: dict[tuple[str, int, int], _Window] = {}
    for raw, topic, partition, offset in records:
        try:
            record = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            record = None
            reason: str | None = "not valid JSON"
        else:
            reason = "empty record" if raw is None else check(record)
        if reason is not None:
            text = raw.decode(errors="replace") if raw is not None else None
            dead.append((topic, partition, offset, text, reason))
            continue
        ts = record["requestTimestamp"]
        if archive is not None:
            archive.append(
                (_text(record.get("inferenceId")), record["type"], record["modelName"],
                 record["modelVersion"], _text(record.get("api")), ts, _int(record.get("httpCode"), 32),
                 _latency(record.get("latencyMs")), raw.decode(errors="replace"),  # type: ignore[union-attr]
                 topic, partition, offset)
            )  # fmt: skip
        head = (record["modelName"], record["modelVersion"], ts - ts % window_ms)
        if head[2] + window_ms <= watermark_ms:
            counts.add(head, "late", "")
            continue
        window = windows.get(head)
        if window is None:
            window = windows[head] = _Window()
        window.events.append(ts)
        if (flagged := record.get("violations")) and type(flagged) is list:
            window.violations.extend(
                v["field"] for v in flagged if isinstance(v, dict) and isinstance(v.get("field"), str)
            )
        if record["type"] == "request":
            inputs = record["inputs"]
            window.rows += len(next(iter(inputs.values())))
            for name, column in inputs.items():
                window.values.setdefault(name, []).extend(column)
            continue
        answered = record.get("answered")  # a shadow's record of a batch: one response per call in it
        calls = len(answered) if type(answered) is list and answered else 1
        window.http.extend([record["httpCode"]] * calls)
        window.latency.extend([record.get("latencyMs")] * calls)
        outputs = record.get("outputs")
        if isinstance(outputs, dict) and outputs:
            scores = outputs.get(output) if output else next(iter(outputs.values()))
            if isinstance(scores, list):
                window.scores.extend(scores)
    for head, window in windows.items():
        _count_window(counts, head, window, references.get(head[:2]), positive_threshold)
    return counts, dead


def count_records(
    source: pa.Table,
    references: dict[tuple[str, int], dict[str, Any]],
    *,
    window_ms: int,
    watermark_ms: int,
    output: str | None,
    positive_threshold: float,
    archive: bool = False,
) -> tuple[_Counts, list[tuple[str, int, int, str | None, str]], pa.Table | None]:
    """The counters and dead letters of a partition's Kafka rows (``value``, ``topic``, ``partition``,
    ``offset``), and with ``archive`` the archive rows of its valid records: the records the
    columnar path (:mod:`jobs.monitor.columnar`) takes are counted there, the others here, one by one."""
    from jobs.monitor import columnar

    categorical = {name for reference in references.values()
                   for name, feature in reference["features"].items()
                   if feature.get("kind") == "categorical"}  # fmt: skip
    try:
        fast = columnar.columns(source.column("value").combine_chunks(), output, categorical)
    except pa.ArrowException as exc:  # an optimisation only: its failure is the per-record path's work
        log.warning("columnar path failed (%s); counting the partition record by record", exc)
        fast = None
    rest = np.ones(source.num_rows, dtype=bool)
    if fast is not None:
        rest[fast.kept] = False
    slow = source.take(pa.array(np.flatnonzero(rest))) if fast is not None else source
    records = list(
        zip(slow.column("value").to_pylist(), slow.column("topic").to_pylist(),
            slow.column("partition").to_pylist(), slow.column("offset").to_pylist(), strict=True)
    )  # fmt: skip
    archived: list[tuple[Any, ...]] | None = [] if archive else None
    counts, dead = count_partition(
        records, references, window_ms=window_ms, watermark_ms=watermark_ms, output=output,
        positive_threshold=positive_threshold, archive=archived,
    )  # fmt: skip
    if fast is None:
        return counts, dead, _archive_table(archived) if archived is not None else None
    _count_columns(counts, fast, references, window_ms, watermark_ms, positive_threshold)
    if archived is None:
        return counts, dead, None
    return counts, dead, pa.concat_tables([_archive_table(archived), _fast_archive(fast, source)])


def _count_columns(counts: _Counts, records: Any, references: dict[tuple[str, int], dict[str, Any]],
                   window_ms: int, watermark_ms: int, positive_threshold: float) -> None:  # fmt: skip
    """:func:`count_partition`'s counting of the columnar path's records (:class:`columnar.Columns`)."""
    from jobs.monitor import columnar

    starts = records.ts - records.ts % window_ms
    encoded = records.model.dictionary_encode()
    models = encoded.dictionary.to_pylist()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype="int64")
    heads, inverse = np.unique(np.stack([codes, records.version, starts]), axis=1, return_inverse=True)
    inverse = inverse.reshape(-1)
    for g in range(heads.shape[1]):
        rows = np.flatnonzero(inverse == g)
        head = (models[heads[0, g]], int(heads[1, g]), int(heads[2, g]))
        if head[2] + window_ms <= watermark_ms:
            counts.add(head, "late", "", n=len(rows))
            continue
        window = _Window()
        window.events = records.ts[rows]  # type: ignore[assignment]
        requests, responses = rows[records.kind[rows]], rows[~records.kind[rows]]
        reference = references.get(head[:2])
        features = reference["features"] if reference is not None else {}
        if len(requests):
            first = next(iter(records.inputs.values()))
            window.rows = int(pc.sum(pc.list_value_length(first.take(pa.array(requests)))).as_py() or 0)
            for name, lists in records.inputs.items():
                categorical = features.get(name, {}).get("kind") == "categorical"
                window.values[name] = columnar.values_of(columnar.flatten(lists, requests), categorical)
        window.http = records.http[responses]  # type: ignore[assignment]
        window.latency = records.latency[responses]  # type: ignore[assignment]
        if records.scores is not None and len(responses):
            window.scores = columnar.values_of(columnar.flatten(records.scores, responses))
        _count_window(counts, head, window, reference, positive_threshold)


def _fast_archive(records: Any, source: pa.Table) -> pa.Table:
    """The columnar path's records as archive rows (:data:`ARCHIVED`'s columns)."""
    where = source.take(pa.array(records.kept))
    kinds = pa.array(np.where(records.kind, "request", "response"), type=pa.string())
    columns = {**records.archive, "type": kinds, "model": records.model, "version": records.version,
               "request_ms": records.ts, "topic": where.column("topic"),
               "partition": where.column("partition"), "offset": where.column("offset")}  # fmt: skip
    schema = pa.schema([OUTPUT.field(name) for name in ARCHIVED])
    return pa.table({name: columns[name] for name in ARCHIVED}, schema=schema)


def _floats(values: list[Any]) -> np.ndarray:
    """Numbers as float64, anything else (null, text, true) as NaN."""
    try:
        return pa.array(values, type=pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return np.array([_number(v) for v in values], dtype="float64")


def _add_bins(counts: _Counts, head: tuple[str, int, int], metric: str, bins: np.ndarray, x: np.ndarray,
              with_extremes: bool = False) -> None:  # fmt: skip
    if not len(bins):
        return
    low = int(bins.min())
    if int(bins.max()) - low < 1 << 16:  # a grid's bins: counted in place, no sort
        inverse = bins - low
        n = np.bincount(inverse)
        found = np.flatnonzero(n)
        sums = np.bincount(inverse, weights=x)[found]
        inverse = np.searchsorted(found, inverse) if with_extremes else inverse
        n = n[found]
        found = found + low
    else:
        found, inverse = np.unique(bins, return_inverse=True)
        n = np.bincount(inverse)
        sums = np.bincount(inverse, weights=x)
    lows = np.full(len(found), np.inf)
    highs = np.full(len(found), -np.inf)
    if with_extremes:
        np.minimum.at(lows, inverse, x)
        np.maximum.at(highs, inverse, x)
    for i, b in enumerate(found.tolist()):
        low, high = (float(lows[i]), float(highs[i])) if with_extremes else (None, None)
        counts.add(head, metric, str(b), n=int(n[i]), total=float(sums[i]), low=low, high=high)


def _count_window(counts: _Counts, head: tuple[str, int, int], window: _Window,
                  reference: dict[str, Any] | None, positive_threshold: float) -> None:  # fmt: skip
    events = np.asarray(window.events)
    counts.add(head, "events", "", n=len(events), low=float(events.min()), high=float(events.max()))
    if window.rows or window.values:
        counts.add(head, "inputs", "", n=len(events) - len(window.http), total=window.rows)
    if len(window.http):
        http = np.asarray(window.http)
        counts.add(head, "requests", "", n=len(http))
        if (errors := int((http >= 400).sum())) > 0:
            counts.add(head, "errors", "", n=errors)
        latency = _floats(window.latency)
        latency = latency[~np.isnan(latency)]
        if len(latency):
            buckets = np.floor(LATENCY_BUCKETS_PER_DOUBLING * np.log2(np.maximum(latency, 0.001) * 1000))
            _add_bins(counts, head, "latency", buckets.astype("int64"), latency, with_extremes=True)
    if len(window.violations):
        fields, n = np.unique(np.asarray(window.violations), return_counts=True)
        for name, count in zip(fields.tolist(), n.tolist(), strict=True):
            counts.add(head, "violations", name, n=count)
    if len(window.scores):
        scores = _floats(window.scores)
        scores = scores[~np.isnan(scores)]
        if len(scores):
            bins = np.clip(np.floor(scores * PREDICTION_BINS), 0, PREDICTION_BINS - 1).astype("int64")
            _add_bins(counts, head, "prediction", bins, scores)
            _add_bins(counts, head, "score", score_bins(scores), scores)  # CBPE's histogram
            if (positive := int((scores >= positive_threshold).sum())) > 0:
                counts.add(head, "positive", "", n=positive)
    if reference is None:
        return
    for name, feature in reference["features"].items():
        column = window.values.get(name)
        if column is not None:
            _count_feature(counts, head, name, column, feature)


def _count_feature(counts: _Counts, head: tuple[str, int, int], name: str, column: list[Any],
                   reference: dict[str, Any]) -> None:  # fmt: skip
    metric = f"f:{name}"
    if reference.get("kind") == "categorical":
        for value in column:
            counts.add(head, metric, "null" if value is None else str(value))
        return
    x = _floats(column)
    missing = np.isnan(x)
    if missing.any():
        counts.add(head, metric, "null", n=int(missing.sum()))
    x = x[~missing]
    edges = reference.get("edges")
    if not len(x) or not edges:
        return
    _add_bins(counts, head, metric, grid_bin(edges, x), x)


def _rows(counts: _Counts, dead: list[tuple[str, int, int, str | None, str]]) -> pa.RecordBatch:
    items = list(counts.rows.items())
    size, dead_size = len(items), len(dead)

    def pad(column: list[Any], dead_rows: bool) -> list[Any]:
        """Counter rows first, then dead-letter rows: each column holds one kind, nulls for the other."""
        return [None] * size + column if dead_rows else column + [None] * dead_size

    columns = {
        "kind": [COUNT] * size + [DEAD] * dead_size,
        "model": pad([k[0] for k, _ in items], False), "version": pad([k[1] for k, _ in items], False),
        "window": pad([k[2] for k, _ in items], False), "metric": pad([k[3] for k, _ in items], False),
        "key": pad([k[4] for k, _ in items], False), "n": pad([int(v[0]) for _, v in items], False),
        "s": pad([v[1] for _, v in items], False),
        "lo": pad([None if v[2] == math.inf else v[2] for _, v in items], False),
        "hi": pad([None if v[3] == -math.inf else v[3] for _, v in items], False),
        "topic": pad([d[0] for d in dead], True), "partition": pad([d[1] for d in dead], True),
        "offset": pad([d[2] for d in dead], True), "value": pad([d[3] for d in dead], True),
        "reason": pad([d[4] for d in dead], True),
    }  # fmt: skip
    return pa.RecordBatch.from_pydict(
        {name: columns.get(name, [None] * (size + dead_size)) for name in OUTPUT.names}, schema=OUTPUT
    )


def _archive_table(archive: list[tuple[Any, ...]]) -> pa.Table:
    """A partition's archive rows in :data:`ARCHIVED`'s columns."""
    schema = pa.schema([OUTPUT.field(name) for name in ARCHIVED])
    return pa.table({name: [row[i] for row in archive] for i, name in enumerate(ARCHIVED)}, schema=schema)


def _file_rows(files: list[tuple[str, str, int, int]]) -> pa.RecordBatch:
    """The files a partition wrote, as :data:`OUTPUT` rows of kind file."""
    columns = {"kind": [FILE] * len(files), "value": [f[0] for f in files], "key": [f[1] for f in files],
               "n": [f[2] for f in files], "s": [float(f[3]) for f in files]}  # fmt: skip
    return pa.RecordBatch.from_pydict(
        {name: columns.get(name, [None] * len(files)) for name in OUTPUT.names}, schema=OUTPUT
    )


def counters_and_dead_letters(
    batch: DataFrame,
    references: dict[tuple[str, int], dict[str, Any]],
    *,
    window_ms: int,
    watermark_ms: int,
    output: str | None,
    positive_threshold: float,
    archive_uri: str | None = None,
    batch_id: int = 0,
) -> DataFrame:
    """A micro-batch of Kafka rows -> one row per counter of each partition (``kind`` count), one per
    dead letter (dead) and, with ``archive_uri``, one per Parquet file of valid records the partition
    wrote under the archive's table (file: its path in ``value``, day in ``key``, rows in ``n``,
    bytes in ``s``), for the driver to commit. Add the counters up by key to get the batch's."""
    options = {"window_ms": window_ms, "watermark_ms": watermark_ms, "output": output,
               "positive_threshold": positive_threshold}  # fmt: skip

    def partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts = list(batches)
        if not parts:
            yield _rows(_Counts(), [])
            return
        counts, dead, archived = count_records(
            pa.Table.from_batches(parts), references, archive=archive_uri is not None, **options
        )
        yield _rows(counts, dead)
        if archived is not None and len(archived) and archive_uri:
            from jobs.monitor.archive import write_files

            yield _file_rows(write_files(archive_uri, archived, batch_id))

    from pyspark.sql.pandas.types import from_arrow_schema

    source = batch.select("value", "topic", "partition", "offset")
    return source.mapInArrow(partition, from_arrow_schema(OUTPUT))


def of_kind(out: pa.Table, kind: str) -> pa.Table:
    """The rows of one kind (:data:`COUNT`, :data:`DEAD`, :data:`FILE`) of the executors' output."""
    return out.filter(pc.equal(out.column("kind"), kind))


def add_up(out: pa.Table) -> list[dict[str, Any]]:
    """The partitions' counter rows added up by key: one dict per counter (:data:`COUNTER_KEY`,
    ``n``, ``s``, ``lo``, ``hi``)."""
    sums = (
        of_kind(out, COUNT)
        .group_by(COUNTER_KEY, use_threads=False)
        .aggregate([("n", "sum"), ("s", "sum"), ("lo", "min"), ("hi", "max")])
    )
    names = {"n_sum": "n", "s_sum": "s", "lo_min": "lo", "hi_max": "hi"}
    return sums.rename_columns([names.get(name, name) for name in sums.column_names]).to_pylist()

"""The inference archive: every inference log record, exactly once, in a Delta table that outlives Kafka.

``Resources/inference/<model>/`` of the project, partitioned by ``date`` (the request's UTC day), one
row per record as the model server logged it: its head fields as typed columns and the record itself
(``record``, the JSON the server sent: inputs after the online lookup, outputs, passthrough fields
such as ``tid``, violations). The Kafka topic keeps 7 days; the archive keeps everything.

It is fed by the monitor's stream, in the same micro-batch as its windows: the executors write the
batch's records as Parquet files where the table lives (the records never cross to the driver), and
the driver appends the files in one Delta commit that carries the streaming query's id and the batch
id as an application transaction, so a batch replayed after a crash finds itself committed and appends
nothing (the same rule as the monitor's windows, :mod:`jobs.monitor.store`). The server may, rarely,
deliver one record twice (a requeue after a delivery timed out: jobs/serve/inference_log.py); the
readers here keep the first row of each (``inference_id``, ``type``).

Reads take a time range over the request time (``start`` inclusive, ``end`` exclusive), which prunes
to the days' partitions, and ``as_of`` (a Delta version or a time) for a point-in-time read: what the
archive held then. :func:`predictions` and :func:`requests` give one row per served row, with the
passthrough fields as columns. Each (model, version) the archive holds is linked in the lineage to
the deployment that served it, so an archived prediction walks back to its raw batch.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.transaction import AddAction

from featurestore.query import as_time
from fjord.errors import NotFoundError
from fjord.fs import SharedFS, delta_scan, object_store_options
from fjord.projects import Project

log = logging.getLogger("fjord.monitor.archive")

INFERENCE = "Resources/inference"
SCHEMA = pa.schema(
    [
        ("inference_id", pa.string()), ("type", pa.string()), ("model", pa.string()),
        ("version", pa.int64()), ("api", pa.string()),
        ("request_time", pa.timestamp("us", tz="UTC")), ("date", pa.date32()),
        ("http_code", pa.int32()), ("latency_ms", pa.float64()), ("record", pa.string()),
        ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
        ("batch_id", pa.int64()),
    ]
)  # fmt: skip
LINEAGE_STAGE = "archive"


@dataclass
class InferenceArchive:
    """One model's archive (the model as the server names it: the serving)."""

    fs: SharedFS  # the project's filesystem
    model: str

    @property
    def path(self) -> str:
        return f"{INFERENCE}/{self.model}"

    @property
    def uri(self) -> str:
        return self.fs.uri(self.path)

    def table(self, as_of: int | datetime | str | None = None) -> DeltaTable | None:
        options = object_store_options(self.uri)
        if not DeltaTable.is_deltatable(self.uri, storage_options=options):
            return None
        table = DeltaTable(self.uri, storage_options=options)
        if isinstance(as_of, int):
            table.load_as_version(as_of)
        elif as_of is not None:
            table.load_as_version(as_time(as_of, "as_of"))
        return table

    def _scan(self, table: DeltaTable, columns: list[str] | None = None,
              filters: list[tuple[str, str, Any]] | None = None) -> pa.Table:  # fmt: skip
        """The table's rows through ``fjord.fs.delta_scan`` (on a remote root, on this thread)."""
        return delta_scan(table, self.fs.backend, self.fs.path(self.path), columns, filters)

    # -- the writer: the monitor's micro-batches -----------------------------------------------------

    def committed_batch(self, app_id: str) -> int | None:
        table = self.table()
        return None if table is None else table.transaction_version(app_id)

    def append(self, rows: pa.Table, app_id: str, batch_id: int) -> int:
        """Append a micro-batch's records (the stream's archive columns) in one commit carrying
        (``app_id``, ``batch_id``), written here; nothing when that batch was committed before. The
        rows appended. (The monitor's stream writes on its executors: :func:`write_files`.)"""
        committed = self.committed_batch(app_id)
        if committed is not None and batch_id <= committed:
            return 0
        data = archive_table(rows, batch_id)
        transaction = Transaction(app_id=app_id, version=batch_id)
        write_deltalake(
            self.uri, data, mode="append", partition_by=["date"],
            storage_options=object_store_options(self.uri),
            commit_properties=CommitProperties(app_transactions=[transaction]),
        )  # fmt: skip
        return len(data)

    def commit_files(self, files: list[tuple[str, str, int, int]], app_id: str, batch_id: int) -> int:
        """Commit Parquet files the executors wrote (:func:`write_files`: path, day, rows, bytes) as the
        micro-batch's append, in one commit carrying (``app_id``, ``batch_id``); nothing when that
        batch was committed before. The rows committed."""
        committed = self.committed_batch(app_id)
        if committed is not None and batch_id <= committed:
            return 0
        options = object_store_options(self.uri)
        table = self.table() or DeltaTable.create(
            self.uri, SCHEMA, mode="ignore", partition_by=["date"], storage_options=options
        )
        now = int(time.time() * 1000)
        actions = [
            AddAction(path, size, {"date": day}, now, True, json.dumps({"numRecords": rows}))
            for path, day, rows, size in files
        ]
        transaction = Transaction(app_id=app_id, version=batch_id)
        table.create_write_transaction(
            actions, "append", SCHEMA, partition_by=["date"],
            commit_properties=CommitProperties(app_transactions=[transaction]),
        )  # fmt: skip
        return sum(rows for _, _, rows, _ in files)

    # -- the readers ---------------------------------------------------------------------------------

    def records(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        kind: str | None = None,
        versions: list[int] | None = None,
        as_of: int | datetime | str | None = None,
    ) -> pa.Table:
        """The archived records with request time in [start, end), each (inference_id, type) once, in
        request time order."""
        table = self.table(as_of)
        if table is None:
            return SCHEMA.empty_table()
        first, last = as_time(start, "start"), as_time(end, "end")
        filters: list[tuple[str, str, Any]] = []
        if first is not None:
            filters += [("date", ">=", first.date()), ("request_time", ">=", first)]
        if last is not None:
            filters += [("date", "<=", last.date()), ("request_time", "<", last)]
        if kind is not None:
            filters.append(("type", "=", kind))
        if versions is not None:
            filters.append(("version", "in", versions))
        data = _first_of_each(self._scan(table, filters=filters))
        order = [
            ("request_time", "ascending"),
            ("kafka_partition", "ascending"),
            ("kafka_offset", "ascending"),
        ]
        return data.sort_by(order)

    def compact(self, days: list[str], retention_hours: int = 168) -> int:
        """Merge the small files each micro-batch wrote into the partitions of ``days`` (the days being
        written: older ones were merged when they were), and drop files no version of the last
        ``retention_hours`` needs (point-in-time reads within a week keep working). Files merged."""
        table = self.table()
        if table is None:
            return 0
        merged = 0
        for day in days:
            metrics = table.optimize.compact(partition_filters=[("date", "=", day)])
            merged += int(metrics.get("numFilesRemoved", 0))
        table.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
        return merged

    def stats(self) -> dict[str, Any]:
        """Rows, days, versions and the Delta version: what ``fjord monitor archive`` shows."""
        table = self.table()
        if table is None:
            return {"uri": self.uri, "records": 0, "requests": 0, "responses": 0, "days": [], "versions": [],
                    "delta_version": None}  # fmt: skip
        data = self._scan(table, columns=["date", "version", "type"])
        return {
            "uri": self.uri,
            "records": len(data),
            "requests": int(pc.sum(pc.equal(data["type"], "request")).as_py() or 0),
            "responses": int(pc.sum(pc.equal(data["type"], "response")).as_py() or 0),
            "days": sorted({d.isoformat() for d in data["date"].to_pylist()}),
            "versions": sorted(set(data["version"].to_pylist())),
            "delta_version": table.version(),
        }


def archive_table(rows: pa.Table, batch_id: int) -> pa.Table:
    """The stream's archive columns (:data:`jobs.monitor.stream.ARCHIVED`) as the table's rows."""
    request_time = pc.cast(pc.multiply(rows["request_ms"], 1000), pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            "inference_id": rows["inference_id"], "type": rows["type"], "model": rows["model"],
            "version": rows["version"], "api": rows["api"], "request_time": request_time,
            "date": pc.cast(pc.cast(request_time, pa.timestamp("us")), pa.date32()),
            "http_code": rows["http_code"], "latency_ms": rows["latency_ms"], "record": rows["value"],
            "kafka_topic": rows["topic"], "kafka_partition": rows["partition"],
            "kafka_offset": rows["offset"], "batch_id": pa.array([batch_id] * len(rows), pa.int64()),
        },
        schema=SCHEMA,
    )  # fmt: skip


def write_files(uri: str, rows: pa.Table, batch_id: int) -> list[tuple[str, str, int, int]]:
    """On an executor: a partition's archive rows as Parquet files under the table at ``uri``, one per
    day, not yet in the table; (path in the table, day, rows, bytes) of each, for
    :meth:`InferenceArchive.commit_files`. A file no commit names (a task run twice) is never read."""
    import uuid

    import pyarrow.parquet as pq

    data = archive_table(rows, batch_id)
    fs = SharedFS(uri)
    out = []
    for day in pc.unique(data["date"]).to_pylist():
        part = data.filter(pc.equal(data["date"], day)).drop_columns(["date"])
        sink = pa.BufferOutputStream()
        pq.write_table(part, sink, compression="zstd")
        path = f"date={day.isoformat()}/part-{batch_id:08d}-{uuid.uuid4().hex}.zstd.parquet"
        body = sink.getvalue().to_pybytes()
        fs.write_bytes(path, body)
        out.append((path, day.isoformat(), len(part), len(body)))
    return out


def _first_of_each(data: pa.Table) -> pa.Table:
    """One row per (inference_id, type): the one at the lowest Kafka position."""
    if not len(data):
        return data
    keys = pc.binary_join_element_wise(data["inference_id"], data["type"], "/")
    if len(pc.unique(keys)) == len(data):  # the rule: no record twice
        return data
    data = data.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    seen: set[str] = set()
    keep = []
    for i, key in enumerate(pc.binary_join_element_wise(data["inference_id"], data["type"], "/").to_pylist()):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return data.take(pa.array(keep))


def _at(column: Any, row: int) -> Any:
    return column[row] if isinstance(column, list) and row < len(column) else None


def _rows(records: pa.Table, part: str) -> list[dict[str, Any]]:
    """One dict per served row of each record: head fields, ``row``, the part's values, passthrough."""
    import orjson

    out = []
    for head, text in zip(
        records.select(["inference_id", "model", "version", "request_time", "http_code"]).to_pylist(),
        records["record"].to_pylist(),
        strict=True,
    ):
        record = orjson.loads(text)
        head["shadow"] = record.get("shadow") is True  # a shadow's scoring, not an answer
        owners = _answered_by_row(record)
        values = record.get(part) or {}
        passthrough = record.get("passthrough") or {}
        size = max((len(v) for v in values.values() if isinstance(v, list)), default=0)
        size = size or max((len(v) for v in passthrough.values() if isinstance(v, list)), default=0)
        for row in range(size):
            item = {**head, "row": row}
            if owners is not None:
                item["answered"] = owners[row] if row < len(owners) else None
            for name, column in passthrough.items():
                item[name] = column[row] if isinstance(column, list) and row < len(column) else None
            for name, column in values.items():
                item[f"{part}.{name}"] = (
                    column[row] if isinstance(column, list) and row < len(column) else None
                )
            out.append(item)
    return out


def _answered_by_row(record: dict[str, Any]) -> list[str] | None:
    """For a shadow's batch record, the answered call's inference id of each row (None otherwise)."""
    answered, rows = record.get("answered"), record.get("answeredRows")
    if not isinstance(answered, list) or not isinstance(rows, list) or len(answered) != len(rows):
        return None
    return [
        call for call, n in zip(answered, rows, strict=True) for _ in range(n if isinstance(n, int) else 0)
    ]


def key_text(value: Any) -> str | None:
    """A join key as text, the same for 1042, 1042.0 and "1042" (pandas reads a column of integers
    with gaps as floats); None for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def predictions(archive: InferenceArchive, start: Any = None, end: Any = None, *, output: str | None = None,
                as_of: Any = None) -> Any:  # fmt: skip
    """One row per served prediction (answered 200): inference_id, row, model, version, request_time,
    ``score`` (``output``, default the model's first output), ``shadow`` (a shadow version's scoring
    of a call another version answered) and the passthrough fields (pandas)."""
    import pandas as pd

    rows = _rows(archive.records(start, end, kind="response", as_of=as_of), "outputs")
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(
            columns=["inference_id", "row", "model", "version", "request_time", "score", "shadow"]
        )
    frame = frame[frame["http_code"] == 200]
    outputs = [c for c in frame.columns if c.startswith("outputs.")]
    chosen = f"outputs.{output}" if output else (outputs[0] if outputs else None)
    if chosen not in frame.columns:
        raise NotFoundError(f"the archived responses of {archive.model} have no output {output!r}")
    frame = frame.rename(columns={chosen: "score"}).drop(columns=[c for c in outputs if c != chosen])
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame = frame.drop(columns=["http_code"]).reset_index(drop=True)
    frame.attrs["output"] = chosen.removeprefix("outputs.")  # which output ``score`` is
    return frame


def requests(archive: InferenceArchive, start: Any = None, end: Any = None, *, as_of: Any = None) -> Any:
    """One row per served row's model inputs (``inputs.<name>``, after the online lookup), with the
    passthrough fields (pandas)."""
    import pandas as pd

    frame = pd.DataFrame(_rows(archive.records(start, end, kind="request", as_of=as_of), "inputs"))
    return frame.drop(columns=["http_code"], errors="ignore")


def link_version(project: Project, model: str, version: int, archive: InferenceArchive) -> None:
    """Record, once, that the archive holds what ``model`` v``version`` served: a lineage run whose
    input is the deployment (and the model version it served) and whose output is the archive."""
    from fjord.lineage import get_run, new_record, save_run

    run_id = f"archive-{project.name}-{model}-v{version}"
    try:
        get_run(run_id)
        return
    except NotFoundError:
        pass
    from jobs.serve import serving

    record = new_record(project, LINEAGE_STAGE, params={"model": model, "version": version}, run_id=run_id)
    record.add_input(serving.serving_uri(project.name, model), str(version), kind="deployment")
    try:
        model_name = serving.get_serving(model, project=project.name).model_name
    except Exception:  # a serving since removed, or a server not started by Fjord
        model_name = model
    record.add_input(project.fs.uri(f"Models/{model_name}/{version}"), str(version), kind="model")
    record.add_output(archive.uri, f"{model}/v{version}", kind="inference_archive")
    record.status, record.ended_at = "succeeded", datetime.now(UTC)
    save_run(project, record)
    log.info("archive of %s v%d linked in the lineage (%s)", model, version, run_id)

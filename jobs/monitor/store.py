"""The monitor's results on the shared filesystem: exactly once, whatever restarts.

Under ``Resources/monitoring/<model>/`` of the project:

- ``performance/`` and ``performance_alerts/``: the realized performance per window and its alerts,
  written by the performance job (jobs/performance/job.py);
- ``skew/``, ``skew_alerts/`` and ``suspect/``: training/serving skew per window and feature, its
  alerts, and the drift alerts it marked suspect, written by the skew job (jobs/skew/job.py);
- ``windows/``: a Delta table, one row per (model, version, window_start): the window's metrics and
  its counters (``state``), updated by every micro-batch that sees the window, ``final`` once the
  watermark passed its end;
- ``alerts/``: a Delta table, one row per alert (``alert_id`` is model/version/window/kind);
- ``dead_letters/batch=<id>/``: Parquet files of the records that could not be counted, with why;
- ``checkpoint/``: the Spark query's checkpoint (its Kafka offsets).

Exactly once: each micro-batch's commit to ``windows`` and ``alerts`` carries a Delta application
transaction (``app_id`` = the streaming query's id, ``version`` = the batch id), in the same commit
as the rows. Spark replays a batch whose offsets it had not yet marked done after a crash; the
monitor then finds the batch id already committed and changes nothing. Dead letters are written
per batch id with overwrite, so a replay rewrites the same files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from fjord.fs import SharedFS, arrow_scan, delta_scan, object_store_options

MONITORING = "Resources/monitoring"

WINDOW_SCHEMA = pa.schema(
    [
        ("model", pa.string()), ("version", pa.int64()),
        ("window_start", pa.timestamp("us", tz="UTC")), ("window_end", pa.timestamp("us", tz="UTC")),
        ("final", pa.bool_()), ("batch_id", pa.int64()), ("updated_at", pa.timestamp("us", tz="UTC")),
        ("records", pa.int64()), ("requests", pa.int64()), ("errors", pa.int64()),
        ("error_rate", pa.float64()), ("latency_p50_ms", pa.float64()), ("latency_p95_ms", pa.float64()),
        ("latency_p99_ms", pa.float64()), ("latency_mean_ms", pa.float64()), ("predictions", pa.int64()),
        ("positive_rate", pa.float64()), ("prediction_mean", pa.float64()), ("rows", pa.int64()),
        ("late", pa.int64()), ("drift", pa.bool_()), ("drift_share", pa.float64()),
        ("drifted_features", pa.string()), ("features", pa.string()), ("prediction_histogram", pa.string()),
        ("max_event_ms", pa.int64()), ("state", pa.string()),
        # added later: an older table gets them at its next write (merge_schema), reads fill them in
        ("input_violations", pa.int64()), ("violations_by_field", pa.string()),
        ("estimated_roc_auc", pa.float64()), ("estimated", pa.string()),
    ]
)  # fmt: skip
ALERT_SCHEMA = pa.schema(
    [
        ("alert_id", pa.string()), ("model", pa.string()), ("version", pa.int64()),
        ("window_start", pa.timestamp("us", tz="UTC")), ("kind", pa.string()), ("message", pa.string()),
        ("detail", pa.string()), ("state", pa.string()), ("event_id", pa.int64()),
        ("dag_run_id", pa.string()), ("created_at", pa.timestamp("us", tz="UTC")),
        ("posted_at", pa.timestamp("us", tz="UTC")),
    ]
)  # fmt: skip
JSON_COLUMNS = ("drifted_features", "features", "prediction_histogram", "detail", "violations_by_field",
                "estimated", "calibration", "estimation_error", "worst", "commits")  # fmt: skip


def _utc_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class MonitorStore:
    """The results of one model's monitor."""

    fs: SharedFS  # the project's filesystem
    model: str

    @property
    def base(self) -> str:
        return f"{MONITORING}/{self.model}"

    def uri(self, part: str) -> str:
        return self.fs.uri(f"{self.base}/{part}")

    def spark_uri(self, part: str) -> str:
        return self.fs.spark_uri(f"{self.base}/{part}")

    def _table(self, part: str) -> DeltaTable | None:
        uri = self.uri(part)
        options = object_store_options(uri)
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        return DeltaTable(uri, storage_options=options)

    def _read(self, part: str, table: DeltaTable, columns: list[str] | None = None,
              filters: list[tuple[str, str, Any]] | None = None) -> pa.Table:  # fmt: skip
        """Table ``part``'s rows (``fjord.fs.delta_scan``: a threaded scan through Python file objects
        aborted `fjord monitor status` at exit on HDFS, in the e2e, 2026-12-07)."""
        return delta_scan(table, self.fs.backend, self.fs.path(f"{self.base}/{part}"), columns, filters)

    # -- exactly-once writes -------------------------------------------------------------------------

    def committed_batch(self, part: str, app_id: str) -> int | None:
        """The last batch id of ``app_id`` committed to table ``part`` (windows or alerts)."""
        table = self._table(part)
        return None if table is None else table.transaction_version(app_id)

    def window_row(self, model: str, version: int, start_ms: int) -> dict[str, Any] | None:
        """One window's row, with its counters."""
        table = self._table("windows")
        if table is None:
            return None
        filters = [("model", "=", model), ("version", "=", version), ("window_start", "=", _utc_ms(start_ms))]
        rows = self._read("windows", table, filters=filters).to_pylist()
        return rows[0] if rows else None

    def upsert(self, part: str, rows: list[dict[str, Any]], keys: tuple[str, ...], schema: pa.Schema,
               transaction: tuple[str, int] | None = None) -> None:  # fmt: skip
        """Insert or replace ``rows`` by ``keys``, in one commit (with the batch's transaction)."""
        if not rows:
            return
        encoded = [
            {
                k: json.dumps(v) if k in JSON_COLUMNS and not isinstance(v, str | None) else v
                for k, v in r.items()
            }
            for r in rows
        ]
        data = pa.Table.from_pylist(encoded, schema=schema)
        properties = CommitProperties(
            app_transactions=[Transaction(app_id=transaction[0], version=transaction[1])]
            if transaction
            else None
        )
        table = self._table(part)
        if table is None:
            write_deltalake(self.uri(part), data, mode="append", commit_properties=properties,
                            storage_options=object_store_options(self.uri(part)))  # fmt: skip
            return
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        (
            table.merge(
                data,
                predicate,
                source_alias="s",
                target_alias="t",
                commit_properties=properties,
                merge_schema=True,  # a column added since the table was made: the table takes it
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def compact(self) -> None:
        """Merge the small files of every micro-batch; drop files no version needs after an hour."""
        for part in ("windows", "alerts"):
            table = self._table(part)
            if table is not None:
                table.optimize.compact()
                table.vacuum(retention_hours=1, dry_run=False, enforce_retention_duration=False)

    # -- reads ----------------------------------------------------------------------------------

    def windows(self) -> list[dict[str, Any]]:
        """Window rows, oldest first, JSON columns decoded (``state`` left out)."""
        table = self._table("windows")
        if table is None:
            return []
        present = set(table.schema().to_arrow().names)  # a table older than a column lacks it
        columns = [f.name for f in WINDOW_SCHEMA if f.name != "state" and f.name in present]
        rows = [{**dict.fromkeys(f.name for f in WINDOW_SCHEMA if f.name != "state"), **r}
                for r in self._read("windows", table, columns=columns).to_pylist()]  # fmt: skip
        return sorted(
            (_decoded(r) for r in rows), key=lambda r: (r["window_start"], r["model"], r["version"])
        )

    def open_windows(self) -> list[dict[str, Any]]:
        """The rows (with their counters) of windows not final yet: a restarted monitor resumes them."""
        table = self._table("windows")
        if table is None:
            return []
        return self._read("windows", table, filters=[("final", "=", False)]).to_pylist()

    def max_event_ms(self) -> int | None:
        table = self._table("windows")
        if table is None:
            return None
        values = self._read("windows", table, columns=["max_event_ms"]).column("max_event_ms").to_pylist()
        return max(values) if values else None

    def alerts(self) -> list[dict[str, Any]]:
        return self.alerts_of("alerts")

    def alerts_of(self, part: str) -> list[dict[str, Any]]:
        """The alerts of table ``part``: the stream's (alerts) or the performance job's
        (performance_alerts), oldest first."""
        table = self._table(part)
        if table is None:
            return []
        return sorted(
            (_decoded(r) for r in self._read(part, table).to_pylist()), key=lambda r: r["created_at"]
        )

    def _decoded_rows(self, part: str, order: tuple[str, ...]) -> list[dict[str, Any]]:
        """Table ``part``'s rows, JSON columns decoded, sorted by the columns of ``order``."""
        table = self._table(part)
        if table is None:
            return []
        rows = (_decoded(r) for r in self._read(part, table).to_pylist())
        return sorted(rows, key=lambda r: tuple(r[c] for c in order))

    def performance(self) -> list[dict[str, Any]]:
        """The realized and estimated performance per (model, version, window), oldest first
        (jobs/performance/job.py)."""
        return self._decoded_rows("performance", ("window_start", "model", "version"))

    def skew(self) -> list[dict[str, Any]]:
        """Training/serving skew per (model, version, window, feature), oldest window first
        (jobs/skew/job.py)."""
        return self._decoded_rows("skew", ("window_start", "model", "version", "feature"))

    def suspects(self) -> list[dict[str, Any]]:
        """The drift alerts the skew job marked suspect: alert_id, the skew alert, its features."""
        table = self._table("suspect")
        return [] if table is None else self._read("suspect", table).to_pylist()

    def _dead_letter_files(self) -> tuple[Any, bool] | None:
        """The dead letters as one pyarrow dataset, and whether it may be scanned on threads
        (``arrow_scan``); None when there are none."""
        import pyarrow.dataset as ds

        rel = f"{self.base}/dead_letters"
        files = self.fs.find(rel, suffix=".parquet") if self.fs.exists(rel) else []
        if not files:
            return None
        filesystem, threads = arrow_scan(self.fs.backend)
        return ds.dataset([self.fs.path(f) for f in files], filesystem=filesystem, format="parquet"), threads

    def dead_letters(self) -> list[dict[str, Any]]:
        """Dead-lettered records, with their reason and Kafka coordinates."""
        found = self._dead_letter_files()
        if found is None:
            return []
        dataset, threads = found
        return dataset.to_table(use_threads=threads).to_pylist()

    def dead_letter_count(self) -> int:
        found = self._dead_letter_files()
        if found is None:
            return 0
        dataset, threads = found
        return dataset.count_rows(use_threads=threads)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for column in JSON_COLUMNS:
        if column in row and row[column] is not None:
            row[column] = json.loads(row[column])
    return row


def version_summary(
    windows: list[dict[str, Any]], performance: list[dict[str, Any]], model: str, version: int,
    since: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """What ``version`` of ``model`` did in the windows (and the realized-performance rows) that end
    after ``since`` (all, if None): calls and errors summed, p99 the worst window's, positive rate,
    mean score and estimated ROC AUC weighted by calls, realized ROC AUC by labelled rows. The canary
    rule and the dashboard's versions side by side read the same figures."""
    out: dict[str, Any] = {"version": version, "windows": 0, "requests": 0, "errors": 0, "p99_ms": None}
    sums = {"positive_rate": [0.0, 0], "prediction_mean": [0.0, 0], "estimated_roc_auc": [0.0, 0]}
    for w in windows:
        if w["model"] != model or w["version"] != version or (since is not None and w["window_end"] <= since):
            continue
        requests = int(w.get("requests") or 0)
        out["windows"] += 1
        out["requests"] += requests
        out["errors"] += int(w.get("errors") or 0)
        if w.get("latency_p99_ms") is not None:
            out["p99_ms"] = max(out["p99_ms"] or 0.0, float(w["latency_p99_ms"]))
        for name, acc in sums.items():
            if w.get(name) is not None and requests:
                acc[0] += float(w[name]) * requests
                acc[1] += requests
    for name, (total, weight) in sums.items():
        out[name] = total / weight if weight else None
    out["error_rate"] = out["errors"] / out["requests"] if out["requests"] else None
    realized, labelled = 0.0, 0
    for row in performance:
        if (
            row["model"] != model
            or row["version"] != version
            or (since is not None and row["window_end"] <= since)
        ):
            continue
        if row.get("roc_auc") is not None and row.get("labelled_rows"):
            realized += float(row["roc_auc"]) * row["labelled_rows"]
            labelled += int(row["labelled_rows"])
    out["realized_roc_auc"], out["labelled"] = (realized / labelled if labelled else None), labelled
    return out

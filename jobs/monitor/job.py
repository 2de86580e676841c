"""The streaming monitor: a model's inference log -> windowed metrics and drift -> results, alerts.

A Spark Structured Streaming query reads ``<model>_inference_log`` with Spark's own Kafka source;
its offsets live in the query's checkpoint. Every micro-batch (:meth:`Monitor.process_batch`):

1. parses the records; those that cannot be counted go to the dead letters with their reason;
2. counts the others into their event-time windows (tumbling, ``window_seconds``), against the
   reference statistics of the model version that served them (:mod:`jobs.monitor.reference`);
   a record for a window the watermark already closed is counted as late, not in the window;
3. advances the watermark (latest event time seen - ``lateness_seconds``): windows it passed become
   final, and a final window that crossed a threshold raises an alert (:mod:`jobs.monitor.alerts`);
4. commits the alerts and the windows to Delta with the batch id as the transaction version, so a
   replayed batch changes nothing (:mod:`jobs.monitor.store`);
5. publishes the changed windows and the new alerts to ``<model>_monitoring`` (keyed by window, so a
   compacted topic keeps each window's latest state), and posts pending alerts to Airflow.

If the query fails (a broker restart that outlasts the Kafka client's retries, say), the monitor
restarts it from the checkpoint and the committed windows, after a back-off.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from fjord.airflow.client import drift_asset
from fjord.config import get_settings
from fjord.errors import FjordError, NotFoundError
from fjord.faults import crash_point
from fjord.jobspec import JobSpec
from fjord.projects import Project, get_project
from jobs.monitor import alerts as alerting
from jobs.monitor import archive, stream
from jobs.monitor.reference import load_card, load_reference
from jobs.monitor.store import ALERT_SCHEMA, WINDOW_SCHEMA, MonitorStore
from jobs.monitor.windows import Thresholds, Window, summarise

log = logging.getLogger("fjord.monitor")
COMPACT_EVERY = 100  # micro-batches
DELIVERY_INTERVAL_S = 10.0


class MonitorError(FjordError):
    """The monitor's streaming query keeps failing (the broker or the filesystem stays away)."""

    exit_code = 16


class MonitorSpec(JobSpec):
    project: str
    model_name: str = "fraud"
    topic: str | None = Field(default=None, description="the inference log topic (default: the serving's)")
    window_seconds: int = Field(default=60, ge=1, le=86_400, description="tumbling event-time windows")
    lateness_seconds: int | None = Field(
        default=None, ge=0, description="how late a record may arrive (default: one window)"
    )
    trigger_seconds: float = Field(default=5.0, gt=0, le=3_600, description="micro-batch interval")
    max_records_per_trigger: int | None = Field(default=None, ge=1)
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    numeric_test: Literal["psi", "wasserstein"] = "psi"
    psi_threshold: float = Field(default=0.2, gt=0)
    wasserstein_threshold: float = Field(default=0.1, gt=0)
    js_threshold: float = Field(default=0.1, gt=0, le=1)
    drift_share: float = Field(default=0.5, gt=0, le=1, description="share of drifted features = drift")
    min_rows: int = Field(default=500, ge=1, description="values a feature needs in a window to be scored")
    error_rate_threshold: float = Field(default=0.05, gt=0, le=1)
    prediction_output: str | None = Field(default=None, description="default: the model's first output")
    positive_threshold: float = Field(default=0.5, ge=0, le=1)
    cooldown_seconds: int = Field(default=3_600, ge=0, description="between retraining alerts, event time")
    asset_uri: str | None = Field(default=None, description="default: fjord://drift/<project>/<model>")
    archive: bool = Field(default=True, description="keep every record in Resources/inference/<model>/")
    notify_airflow: bool = True
    available_now: bool = Field(default=False, description="process what the topic holds, then stop")
    run_seconds: float | None = Field(default=None, gt=0, description="stop after this long")

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    @property
    def lateness_ms(self) -> int:
        return (self.window_seconds if self.lateness_seconds is None else self.lateness_seconds) * 1000

    def thresholds(self) -> Thresholds:
        return Thresholds(
            psi=self.psi_threshold, wasserstein=self.wasserstein_threshold, js=self.js_threshold,
            numeric_test=self.numeric_test, drift_share=self.drift_share, min_rows=self.min_rows,
            error_rate=self.error_rate_threshold,
        )  # fmt: skip


@dataclass
class MonitorResult:
    model: str
    topic: str
    batches: int
    records: int
    windows: int
    alerts: int
    dead_letters: int
    results: str
    busy_seconds: float  # from the first micro-batch's start to the last one's end

    @property
    def records_per_second(self) -> float:
        return self.records / self.busy_seconds if self.busy_seconds else 0.0

    def summary(self) -> str:
        return (
            f"monitored {self.topic}: {self.batches} micro-batches, {self.records:,} records, "
            f"{self.windows} windows, {self.alerts} alerts, {self.dead_letters} dead letters; {self.results}"
        )


class Monitor:
    """The micro-batch function of the query, and the state it carries between batches."""

    def __init__(self, spec: MonitorSpec, project: Project, spark: Any) -> None:
        self.spec = spec
        self.project = project
        self.spark = spark
        self.store = MonitorStore(project.fs, spec.model_name)
        self.thresholds = spec.thresholds()
        self.notifier = (
            alerting.AirflowNotifier(spec.asset_uri or drift_asset(spec.project, spec.model_name))
            if spec.notify_airflow else None
        )  # fmt: skip
        self.archive = archive.InferenceArchive(project.fs, spec.model_name) if spec.archive else None
        self.linked: set[int] = set()  # versions whose archive is linked in the lineage
        self.references: dict[tuple[str, int], dict[str, Any] | None] = {}
        self.cards: dict[tuple[str, int], dict[str, Any] | None] = {}
        self.app_id: str | None = None
        self.ready = threading.Event()
        self.batches = self.records = 0
        self.first_batch_at: float | None = None
        self.last_batch_end: float | None = None
        self._producer: Any = None
        # The query's thread commits alerts; the main thread delivers them while the stream is idle.
        self._alerts_lock = threading.Lock()
        self._undelivered = True  # unknown until the alerts table is read once
        self.restore()
        self.preload_references()

    def restore(self) -> None:
        """The open windows and the watermark, as the last committed batch left them."""
        self.open: dict[tuple[str, int, int], Window] = {}
        for row in self.store.open_windows():
            start = int(row["window_start"].timestamp() * 1000)
            window = Window.from_state(row["model"], row["version"], start, json.loads(row["state"]))
            self.open[window.key] = window
        self.max_event_ms = self.store.max_event_ms() or 0

    @property
    def watermark_ms(self) -> int:
        return self.max_event_ms - self.spec.lateness_ms

    def reference(self, model: str, version: int) -> dict[str, Any] | None:
        if (model, version) not in self.references:
            self.references[(model, version)] = load_reference(self.project, model, version)
        return self.references[(model, version)]

    def card(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's card (its test metrics, serving threshold and calibration), or None."""
        if (model, version) not in self.cards:
            self.cards[(model, version)] = load_card(self.project, model, version)
        return self.cards[(model, version)]

    def preload_references(self) -> None:
        """The references of every version published under ``Models/<model>/``."""
        models = f"Models/{self.spec.model_name}"
        if self.project.fs.exists(models):
            for name in self.project.fs.listdir(models):
                if name.isdigit():
                    self.reference(self.spec.model_name, int(name))

    # -- one micro-batch ---------------------------------------------------------------------------

    def _counters(self, batch: Any, batch_id: int) -> tuple[list[dict[str, Any]], Any]:
        """The batch's counters, added up by key, and the executors' output (a pyarrow table: the
        counter rows, the dead letters and the archive's files), in one Spark job."""
        references = {k: ref for k, ref in self.references.items() if ref is not None}
        out = stream.counters_and_dead_letters(
            batch, references, window_ms=self.spec.window_ms, watermark_ms=self.watermark_ms,
            output=self.spec.prediction_output, positive_threshold=self.spec.positive_threshold,
            archive_uri=self.archive.uri if self.archive is not None else None, batch_id=batch_id,
        ).toArrow()  # fmt: skip
        return stream.add_up(out), out

    def _archive(self, out: Any, batch_id: int, versions: set[int]) -> None:
        """The batch's valid records to the inference archive, once (before the windows' commit: a
        replay after a crash between the two finds the archive's part done and does the rest)."""
        assert self.archive is not None and self.app_id is not None
        committed = self.archive.committed_batch(self.app_id)
        if committed is not None and batch_id <= committed:
            return
        files = stream.of_kind(out, stream.FILE).select(["value", "key", "n", "s"]).to_pylist()
        self.archive.commit_files(
            [(f["value"], f["key"], int(f["n"]), int(f["s"])) for f in files], self.app_id, batch_id
        )
        for version in versions - self.linked:
            archive.link_version(self.project, self.spec.model_name, version, self.archive)
            self.linked.add(version)

    def _dead_letters(self, out: Any, batch_id: int) -> dict[str, int]:
        """The batch's dead letters to ``dead_letters/batch=<id>/`` (one file, rewritten whole by a
        replay); their count per reason."""
        import pyarrow.parquet as pq

        dead = stream.of_kind(out, stream.DEAD).select(["topic", "partition", "offset", "value", "reason"])
        if not len(dead):
            return {}
        sink = pa.BufferOutputStream()
        pq.write_table(dead, sink, compression="zstd")
        self.store.fs.write_bytes(f"{self.store.base}/dead_letters/batch={batch_id}/part-0.zstd.parquet",
                                  sink.getvalue().to_pybytes())  # fmt: skip
        return dict(Counter(dead.column("reason").to_pylist()))

    def process_batch(self, batch: Any, batch_id: int) -> None:
        self.ready.wait()
        assert self.app_id is not None
        committed = self.store.committed_batch("windows", self.app_id)
        if committed is not None and batch_id <= committed:
            log.info("batch %d was committed before a restart: skipped", batch_id)
            return
        started = time.monotonic()
        self.first_batch_at = self.first_batch_at or started
        rows, out = self._counters(batch, batch_id)
        seen = {(r["model"], int(r["version"])) for r in rows if r["metric"] == "events"}
        # A version this monitor had not met (deployed since it started): with its reference found,
        # the batch is counted again, so the version's features are scored from its first record.
        unknown = [key for key in seen if key not in self.references]
        if [key for key in unknown if self.reference(*key) is not None]:
            rows, out = self._counters(batch, batch_id)
        if self.archive is not None:
            self._archive(out, batch_id, {version for _, version in seen})
            crash_point("monitor.archived")  # a kill here: the replay finds the archive's part done
        dead = self._dead_letters(out, batch_id)
        counted = time.monotonic()
        changed, reopened = self._count(rows)
        final = self._advance_watermark()
        window_rows, new_alerts = self._results(changed | final, final - reopened, batch_id)
        transaction = (self.app_id, batch_id)
        with self._alerts_lock:
            alerts_committed = self.store.committed_batch("alerts", self.app_id)
            if alerts_committed is None or batch_id > alerts_committed:
                self.store.upsert("alerts", new_alerts, ("alert_id",), ALERT_SCHEMA, transaction)
            self._undelivered = self._undelivered or bool(new_alerts)
        self.store.upsert(
            "windows", window_rows, ("model", "version", "window_start"), WINDOW_SCHEMA, transaction
        )
        committed = time.monotonic()
        for key in final:
            self.open.pop(key, None)
        records = sum(r["n"] for r in rows if r["metric"] in ("events", "late")) + sum(dead.values())
        self.batches += 1
        self.records += records
        self._publish(window_rows, new_alerts)
        self.deliver()
        if self.batches % COMPACT_EVERY == 0:
            self.store.compact()
            if self.archive is not None:
                today = datetime.now(UTC).date()
                self.archive.compact([(today - timedelta(days=d)).isoformat() for d in (1, 0)])
        self.last_batch_end = time.monotonic()
        log.info(
            "batch %d: %d records, %d windows updated, %d final, %d alerts, %d dead letters in %.2f s "
            "(Spark %.2f s, windows and commits %.2f s)", batch_id, records, len(window_rows), len(final),
            len(new_alerts), sum(dead.values()), time.monotonic() - started, counted - started,
            committed - counted,
        )  # fmt: skip

    def _count(self, rows: list[Any]) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
        """Add the batch's counters to their windows; (the windows changed, those of them that had
        closed before: they gain late records, and raised their alerts already)."""
        changed, reopened = set(), set()
        for r in rows:
            key = (r["model"], int(r["version"]), int(r["window"]))
            window = self.open.get(key)
            if window is None:
                # A new window, or one closed before this batch that gains late records: only that
                # one has a stored row to resume.
                closed = key[2] + self.spec.window_ms <= self.watermark_ms
                stored = self.store.window_row(*key) if closed else None
                window = (Window.from_state(*key, json.loads(stored["state"])) if stored
                          else Window(*key))  # fmt: skip
                self.open[key] = window
                if closed:
                    reopened.add(key)
            window.add(r["metric"], r["key"], r["n"], r["s"], r["lo"], r["hi"])
            changed.add(key)
        self.max_event_ms = max([self.max_event_ms, *(self.open[k].max_event_ms for k in changed)])
        return changed, reopened

    def _advance_watermark(self) -> set[tuple[str, int, int]]:
        """The open windows the watermark has passed."""
        return {k for k in self.open if k[2] + self.spec.window_ms <= self.watermark_ms}

    def _results(self, keys: set[tuple[str, int, int]], final: set[tuple[str, int, int]],
                 batch_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
        rows, new_alerts = [], []
        earlier = self.store.alerts() if final else []
        now = datetime.now(UTC)
        for key in sorted(keys, key=lambda k: k[2]):
            window = self.open[key]
            model, version, start_ms = key
            summary = summarise(window, self.reference(model, version), self.thresholds,
                                self.card(model, version), self.spec.positive_threshold)  # fmt: skip
            cbpe = summary["estimated"]
            start = datetime.fromtimestamp(start_ms / 1000, UTC)
            end = start + timedelta(milliseconds=self.spec.window_ms)
            rows.append({
                "model": model, "version": version, "window_start": start, "window_end": end,
                "final": start_ms + self.spec.window_ms <= self.watermark_ms,
                "batch_id": batch_id, "updated_at": now,
                **{k: summary[k] for k in ("records", "requests", "errors", "error_rate", "latency_p50_ms",
                   "latency_p95_ms", "latency_p99_ms", "latency_mean_ms", "predictions", "positive_rate",
                   "prediction_mean", "rows", "late", "drift", "drift_share", "drifted_features", "features",
                   "prediction_histogram", "input_violations", "violations_by_field")},
                "max_event_ms": window.max_event_ms, "state": json.dumps(window.to_state()),
                "estimated": cbpe, "estimated_roc_auc": cbpe.get("roc_auc") if cbpe else None,
            })  # fmt: skip
            if key in final:
                found = alerting.new_alerts(model, version, start, end, summary, self.thresholds, earlier,
                                            timedelta(seconds=self.spec.cooldown_seconds))  # fmt: skip
                earlier = [*earlier, *found]
                new_alerts.extend(found)
        return rows, new_alerts

    def _publish(self, windows: list[dict[str, Any]], new_alerts: list[dict[str, Any]]) -> None:
        """To ``<model>_monitoring``: at least once, keyed by window (or alert) id."""
        if not windows and not new_alerts:
            return
        from fjord import kafka

        topic = f"{self.spec.model_name}_monitoring"
        try:
            if self._producer is None:
                kafka.ensure_topic(topic, retention_ms=30 * 86_400_000)
                self._producer = kafka.producer(acks=1, linger_ms=20)
            for row in windows:
                key = f"{row['model']}/{row['version']}/{int(row['window_start'].timestamp() * 1000)}"
                value = {"type": "window", **{k: v for k, v in row.items() if k != "state"}}
                self._producer.send(topic, key=key.encode(), value=_json(value))
            for alert in new_alerts:
                self._producer.send(
                    topic, key=alert["alert_id"].encode(), value=_json({"type": "alert", **alert})
                )
            self._producer.flush(timeout=10)
        except Exception as exc:  # the results table is the record; the topic is a live feed
            log.warning("could not publish to %s: %s", topic, exc)
            self._producer = None

    def deliver(self) -> None:
        """Post pending alerts to Airflow and record the runs they started. The alerts table is read
        only while some alert still waits for either, not at every micro-batch."""
        if self.notifier is None or not self._undelivered:
            return
        with self._alerts_lock:
            alerts = {a["alert_id"]: a for a in self.store.alerts()}
            updates = self.notifier.deliver(list(alerts.values()))
            self.store.upsert("alerts", updates, ("alert_id",), ALERT_SCHEMA)
            alerts.update({a["alert_id"]: a for a in updates})
            self._undelivered = any(alerting.undelivered(a) for a in alerts.values())

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)).encode()


def _topic(spec: MonitorSpec) -> str:
    """The inference log topic; created if the model is served (its server creates it on its first
    call), so a monitor may start before any traffic."""
    from fjord import kafka
    from jobs.serve import serving
    from jobs.serve.inference_log import default_topic

    served = serving.exists(spec.model_name, project=spec.project)
    topic = spec.topic or (
        serving.get_kafka_topic(spec.model_name, project=spec.project)
        if served
        else default_topic(spec.model_name)
    )
    if topic not in {t.name for t in kafka.list_topics()}:
        if not served or spec.topic:
            raise NotFoundError(
                f"topic {topic!r} does not exist", hint="deploy the model with inference logging"
            )
        kafka.ensure_topic(topic, retention_ms=7 * 86_400_000)
    return topic


def run(spec: MonitorSpec, stop: threading.Event | None = None) -> MonitorResult:
    """Run the monitor until stopped: SIGTERM, ``run_seconds``, ``available_now`` done, or ``stop`` set
    (a caller that runs it in a thread)."""
    from fjord.spark import get_spark

    project = get_project(spec.project)
    topic = _topic(spec)
    # On a Spark cluster a streaming query holds its cores for good: only monitor.cluster_cores of
    # them (spark.cores.max, which local mode ignores), or the DAGs' jobs wait behind it forever.
    cores = {"spark.cores.max": str(get_settings().monitor.cluster_cores)}
    spark = get_spark(project, app_name=f"fjord-monitor-{spec.model_name}", conf=cores)
    monitor = Monitor(spec, project, spark)
    stop = stop or threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if _main_thread() else None
    deadline = time.monotonic() + spec.run_seconds if spec.run_seconds else None
    failures = 0
    try:
        while not stop.is_set():
            query = _start_query(spark, spec, topic, monitor)
            try:
                last_delivery = time.monotonic()
                while query.isActive and not stop.is_set():
                    if deadline and time.monotonic() > deadline:
                        stop.set()
                    query.awaitTermination(0.5)
                    if time.monotonic() - last_delivery > DELIVERY_INTERVAL_S:
                        monitor.deliver()  # retries and run ids, without waiting for traffic
                        last_delivery = time.monotonic()
                error = query.exception()
            finally:
                query.stop()
            if error is None:
                break
            failures += 1
            if failures > 5:
                raise MonitorError(
                    f"the streaming query failed {failures} times: {str(error).splitlines()[0]}"
                )
            log.warning("the query failed (%s); restarting from its checkpoint", str(error).splitlines()[0])
            monitor.restore()
            stop.wait(min(2**failures, 30))
    finally:
        monitor.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return MonitorResult(
        spec.model_name,
        topic,
        monitor.batches,
        monitor.records,
        len(monitor.store.windows()),
        len(monitor.store.alerts()),
        monitor.store.dead_letter_count(),
        monitor.store.uri("windows"),
        (monitor.last_batch_end or 0.0) - (monitor.first_batch_at or 0.0),
    )


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def kafka_source(spark: Any, topic: str, starting_offsets: str = "earliest",
                 max_records_per_trigger: int | None = None) -> Any:  # fmt: skip
    """The monitor's stream source: Spark's Kafka source on ``topic``, each micro-batch split into as
    many tasks as Spark runs at once (the inference log has one partition; more tasks than slots
    measured slower: a second wave of tasks, each paying the Python worker's round trip)."""
    from fjord import kafka
    from fjord.spark import task_slots

    reader = (
        spark.readStream.format("kafka")
        .options(**kafka.spark_options())  # the address and the login (Spark redacts its password)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "false")  # a retention that deleted unread records is not fatal
        .option("minPartitions", str(task_slots(spark)))
    )
    if max_records_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_records_per_trigger))
    return reader


def _start_query(spark: Any, spec: MonitorSpec, topic: str, monitor: Monitor) -> Any:
    reader = kafka_source(spark, topic, spec.starting_offsets, spec.max_records_per_trigger)
    writer = (
        reader.load()
        .writeStream.foreachBatch(monitor.process_batch)
        .option("checkpointLocation", monitor.store.spark_uri("checkpoint"))
    )
    writer = (writer.trigger(availableNow=True) if spec.available_now
              else writer.trigger(processingTime=f"{spec.trigger_seconds} seconds"))  # fmt: skip
    monitor.ready.clear()
    query = writer.queryName(f"fjord_monitor_{spec.model_name}").start()
    monitor.app_id = f"fjord-monitor-{query.id}"
    monitor.ready.set()
    print(f"monitor: query started on {topic}, results {monitor.store.uri('windows')}", flush=True)
    return query

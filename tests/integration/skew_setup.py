"""A day of demo transactions served as the model server serves them, for the skew tests and bench.

The ETL publishes the earlier days (their online state: each card's latest state and profile); the
day's transactions then go, in time order and in requests of ``per_request``, through the server's own
enrichment (:class:`jobs.serve.features.FeatureEnricher` over the ``fraud_serving`` view, the online
store, and a transformer), and each request's record (the model inputs after the lookup, the ``tid``)
lands in the inference archive as the monitor archives it, with its response (a score growing with the
amount, standing in for a model's). The ETL of the day afterwards computes
the same transactions' features from the raw batch.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from jobs.etl.job import EtlSpec
from jobs.etl.job import run as etl
from jobs.features.job import ensure_view
from jobs.monitor import stream
from jobs.monitor.archive import InferenceArchive
from jobs.serve.features import FeatureEnricher
from jobs.serve.metrics import Metrics
from jobs.serve.transformers import FraudTransformer

INPUTS = ["amount", "tx_count_1h", "tx_count_24h", "amount_sum_24h", "amount_mean_7d", "secs_since_prev",
          "dist_prev_km", "speed_prev_kmh", "category_freq_7d", "hour", "is_night", "age_years",
          "days_to_expiry"]  # fmt: skip


def publish(project: Any, batches: list[str]) -> None:
    """The ETL of ``batches``, in order (without validation: the skew tests check features)."""
    for batch in batches:
        etl(EtlSpec(project=project.name, batch=batch, validate_data=False))


class LocalHour:
    """A deliberately wrong transformer: the right one's inputs, with the hour in Berlin's winter
    time (UTC+1), as a server in a local time zone would compute it."""

    def __init__(self) -> None:
        self.right = FraudTransformer()

    def __call__(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = self.right(rows)
        for row in out:
            row["hour"] = (row["hour"] + 1) % 24
            row["is_night"] = float(row["hour"] < 5)
        return out


local_hour = LocalHour()


def serve_day(project: Any, batch: str, *, transformer: Any = None, per_request: int = 1,
              limit: int | None = None, version: int = 1, archive_batch: int = 0) -> int:  # fmt: skip
    """Serve ``batch``'s transactions (the first ``limit``) through the online lookup and
    ``transformer`` (default: a new server's fraud transformer) as ``version``; their request records
    into the archive. The rows served."""
    ensure_view(project.name, "fraud_serving")
    enricher = FeatureEnricher.from_flag(f"{project.name}/fraud_serving", Metrics())
    enricher.transformer = transformer or FraudTransformer()  # a server's own: what it served since
    frame = project.fs.read_parquet(f"Resources/landing/{batch}/transactions.parquet").to_pandas()
    frame = frame.sort_values(["ts", "tid"]).head(limit) if limit else frame.sort_values(["ts", "tid"])
    instances = [
        {"tid": int(r.tid), "cc_num": int(r.cc_num), "amount": float(r.amount), "ts": r.ts.isoformat(),
         "lat": float(r.lat), "lon": float(r.lon), "category": str(r.category)}
        for r in frame.itertuples()
    ]  # fmt: skip
    rows, now = [], int(datetime.now(UTC).timestamp() * 1000)
    for start in range(0, len(instances), per_request):
        chunk = instances[start : start + per_request]
        tids = [i.pop("tid") for i in chunk]  # a passthrough field: the server takes it out first
        doc = enricher("fraud", {"instances": chunk}, INPUTS)
        inputs = {name: [row[name] for row in doc["instances"]] for name in INPUTS}
        record = {
            "inferenceId": uuid.uuid4().hex, "type": "request", "modelName": "fraud", "modelVersion": version,
            "api": "rest", "requestTimestamp": now + start, "inputs": inputs, "passthrough": {"tid": tids},
        }  # fmt: skip
        head = (record["inferenceId"], "request", "fraud", version, "rest", now + start, 200, 1.0)
        rows.append((*head, orjson.dumps(record).decode(), "fraud_inference_log", 0, 2 * start))
        # The response, with a score that grows with the amount (a stand-in for the model's output:
        # what the performance job judges against the labels the ETL publishes)
        scores = [1 / (1 + math.exp(-(a / 150 - 2))) for a in inputs["amount"]]
        response = {**record, "type": "response", "httpCode": 200, "outputs": {"fraud_probability": scores}}
        del response["inputs"]
        head = (head[0], "response", *head[2:])
        rows.append((*head, orjson.dumps(response).decode(), "fraud_inference_log", 0, 2 * start + 1))
    table = pa.Table.from_pylist([dict(zip(stream.ARCHIVED, r, strict=True)) for r in rows])
    archive = InferenceArchive(project.fs, "fraud")
    schema = pa.schema([stream.OUTPUT.field(n) for n in stream.ARCHIVED])
    archive.append(table.cast(schema), "test", archive_batch)
    return len(instances)

"""The Spark ETL and validation job: one landing batch -> validated features in the feature store.

``run(EtlSpec(project="fraud", batch="2026-11-01"))``:

1. reads the batch (``Resources/landing/<batch>/``, Parquet or CSV) with an explicit schema; a batch
   without ``_SUCCESS``, or whose columns drifted, is refused;
2. cleans: normalises text, keeps timestamps in UTC, dedupes by tid; malformed records, rows that
   break a ``quarantine`` expectation of the suites, and labels of no (or of a quarantined)
   transaction go to ``Resources/quarantine/<batch>/`` with their reason, and are counted; more
   broken rows than an expectation's ``max_fraction`` reject the batch;
3. engineers per-card window features with Spark (count/sum/mean/std of amount over 1h, 4h, 24h and
   7d, time since the previous transaction, distance and speed from its location, category frequency),
   using the previous 7 days already in the feature store as context, and per-profile features;
4. validates every record with Great Expectations (suites in ``jobs/etl/expectations/``); results and
   HTML Data Docs go to the project's ``Logs/validation/<run_id>/``;
5. publishes only a batch that passes: one commit each to ``transactions_features``,
   ``profile_features``, ``fraud_labels`` and ``card_features`` (each card's latest state, for the
   model server's online lookups), in one publish: all four become visible together or none does.
   Recorded in the run's lineage with the landing files' checksums. Re-running a batch finds the same
   rows already published and adds no commit.

Batches may arrive in any order, and the features do not depend on it. A batch older than published
ones is context for them: after it is published, every later published batch whose 7-day windows
reach back to it, and every later one whose quarantine holds labels (they may be this batch's), is
recomputed, oldest first, each as its own run. One ETL of a project runs at a time on a host (a lock
in ``FJORD_HOME``; the DAG's ``etl`` task runs one at a time across its runs), so two batches never
read each other's history half-written.

This module is the job: its steps in order (``_run_batch``: land, clean, quarantine, validate,
featurize, publish). What any ingest does is in ``landing.py``; what is the fraud demo's (the files'
schemas, cleaning, the four groups and their features) in ``fraud.py``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

import featurestore
from fjord.config import get_settings
from fjord.errors import FjordError
from fjord.jobspec import JobSpec
from fjord.lineage import NOT_REUSABLE, RunRecord, track_run
from fjord.locks import locked
from fjord.projects import Project, get_project
from fjord.spark import get_spark
from jobs.etl import fraud
from jobs.etl.fraud import CONTEXT, FILES, GROUPS, LABEL_LOOKBACK, SCHEMAS
from jobs.etl.landing import (
    LANDING,
    QUARANTINE,
    VALIDATION_LOGS,
    BatchRejected,
    EtlError,
    check_fractions,
    landed_file,
    publish_dir,
    read,
    split_bad,
    step,
)
from jobs.etl.validation import RowRule, ValidationReport, load_suite, row_rules, validate

__all__ = ["BatchRejected", "EtlError", "EtlResult", "EtlSpec", "run"]

_CODE = [Path(__file__).parent]


class EtlSpec(JobSpec):
    """What to run: which project's batch, and how."""

    project: str = Field(description="the project whose landing batch to process")
    batch: str = Field(description="the landing batch's date, YYYY-MM-DD")
    validate_data: bool = Field(default=True, description="validate every record with Great Expectations")
    expectations_dir: Path | None = Field(
        default=None, description="a directory of expectation suites instead of jobs/etl/expectations/"
    )

    @field_validator("batch")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"batch must be a date YYYY-MM-DD, not {value!r}") from None
        return value


@dataclass
class EtlResult:
    run_id: str
    batch: str
    rows_in: int
    quarantined: dict[str, int]  # per landing file
    reasons: dict[str, int] = field(default_factory=dict)  # "<file>: <reason>" -> rows
    quarantine_uri: str | None = None
    commits: dict[str, int] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)  # groups that already held the batch's rows
    validation: ValidationReport | None = None
    report_uri: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the profile
    recomputed: list[EtlResult] = field(default_factory=list)  # later batches, this one their context

    def summary(self) -> str:
        quarantined = sum(self.quarantined.values())
        published = ", ".join(
            f"{k} commit {v}" + (" (unchanged)" if k in self.unchanged else "")
            for k, v in self.commits.items()
        )
        warnings = len(self.validation.warnings) if self.validation else 0
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items(), key=lambda r: -r[1]))
        where = f" ({why}; in {self.quarantine_uri})" if quarantined else ""
        later = ""
        if self.recomputed:
            batches = ", ".join(r.batch for r in self.recomputed)
            later = f"; recomputed the later batch(es) {batches} with this one as context"
        return (
            f"batch {self.batch}: {self.rows_in:,} rows read, {quarantined:,} quarantined{where}, "
            f"{warnings} warning(s); published {published}; report {self.report_uri}{later}"
        )


# -- the job ------------------------------------------------------------------------------------------


HISTORY = "transactions_features"  # the group whose published rows a batch reads as its history


def _history_commit(store: featurestore.FeatureStore, record: RunRecord) -> int | None:
    """The commit of :data:`HISTORY` this batch reads (None: nothing published yet), recorded as an
    input: the batch's features depend on it, so a later run may reuse this one only while it is
    current (fjord/stepcache.py). A run that read no history is never reused: a batch published
    later, but dated earlier, could change its windows."""
    groups = store.get_feature_groups(HISTORY)
    if not groups or not groups[0].exists():
        record.params[NOT_REUSABLE] = f"it read no {HISTORY}: nothing was published before it"
        return None
    commit = groups[0].snapshot().version
    record.add_input(groups[0].location, str(commit), kind="feature_group")
    return commit


def _history(
    fs: featurestore.FeatureStore,
    spark: SparkSession,
    start: datetime,
    span: timedelta = CONTEXT,
    commit: int | None = None,
) -> DataFrame | None:
    """The published transactions of the ``span`` before ``start`` (at ``commit``, default the
    latest; None before the first batch)."""
    groups = fs.get_feature_groups(HISTORY)
    if not groups or not groups[0].exists():
        return None
    frame = groups[0].read(commit, dataframe_type="spark")
    return frame.where((F.col("ts") >= F.lit(start - span)) & (F.col("ts") < F.lit(start)))


def _published_batches_after(fs: featurestore.FeatureStore, start: datetime) -> list[str]:
    """The days after ``start``'s with published transactions: the later batches (a batch holds its day)."""
    groups = fs.get_feature_groups("transactions_features")
    if not groups or not groups[0].exists():
        return []
    frame = groups[0].read(dataframe_type="spark").where(F.col("ts") >= F.lit(start + timedelta(days=1)))
    days = frame.select(F.to_date("ts").alias("day")).distinct().collect()
    return sorted(row["day"].isoformat() for row in days)


def _needs_recompute(project: Project, start: datetime, batch: str) -> bool:
    """Whether a later ``batch`` may read ``start``'s rows: in its windows, or as a label's transaction."""
    day = datetime.strptime(batch, "%Y-%m-%d").replace(tzinfo=UTC)
    if day - start <= CONTEXT:
        return True
    return day - start <= LABEL_LOOKBACK and project.fs.exists(f"{QUARANTINE}/{batch}/labels")


def run(spec: EtlSpec) -> EtlResult:
    """Run the job for one batch, then recompute the later batches that read it (see the module's doc).

    :class:`BatchRejected` if it fails critical expectations.
    """
    project = get_project(spec.project)
    with locked(get_settings().home / "locks" / f"etl-{spec.project}.lock"):
        result = _run_batch(spec, project)
        start = datetime.strptime(spec.batch, "%Y-%m-%d").replace(tzinfo=UTC)
        later = _published_batches_after(featurestore.connect(spec.project), start)
        for batch in (b for b in later if _needs_recompute(project, start, b)):
            try:
                # its own run, a child of this one in the lineage
                later_spec = spec.model_copy(
                    update={"batch": batch, "run_id": None, "parent_run_id": result.run_id}
                )
                result.recomputed.append(_run_batch(later_spec, project))
            except FjordError as exc:
                raise EtlError(
                    f"batch {spec.batch} is published, but recomputing the later batch {batch} with it "
                    f"as context failed: {exc}",
                    hint=f"fix the cause, then run the ETL of {batch} again (it reads {spec.batch})",
                ) from exc
    return result


def _run_batch(spec: EtlSpec, project: Project) -> EtlResult:
    """One batch, start to publish: land -> clean -> quarantine -> validate -> featurize -> publish."""
    files = _landed(project, spec.batch)
    start = datetime.strptime(spec.batch, "%Y-%m-%d").replace(tzinfo=UTC)
    spark = get_spark(project, app_name=f"etl-{spec.batch}")
    store = featurestore.connect(spec.project)
    with track_run(
        project, "etl", params=spec.model_dump(mode="json"), code=_CODE, **spec.run_tree()
    ) as record:
        for rel in files.values():
            record.add_input(project.fs.uri(rel), project.fs.checksum(rel), kind="raw")
        read_at = _history_commit(store, record)
        raw = {name: read(spark, project.fs, rel, SCHEMAS[name]) for name, rel in files.items()}
        seconds: dict[str, float] = {}
        with step(seconds, spec.batch, "read"):
            rows_in = raw["transactions"].count()
        suites = _suites(spec, start)
        rules = {name: row_rules(name, suite) for name, suite in suites.items()}
        good, bad = _clean(raw, rules, store, spark, start, read_at)
        result = EtlResult(record.run_id, spec.batch, rows_in, {}, seconds=seconds)
        _quarantine(project, spec.batch, bad, result)
        # Only a file with quarantined rows needs its row count: no extra pass over clean files.
        rows = {name: rows_in if name == "transactions" else raw[name].count()
                for name in FILES if result.quarantined[name]}  # fmt: skip
        rules_of_all = [rule for name in FILES for rule in rules[name]]
        check_fractions(spec.batch, result.reasons, rows, rules_of_all, str(result.quarantine_uri))
        if spec.validate_data:
            _validate(project, spec.batch, good, suites, result, record)
        frames = fraud.feature_frames(
            good["transactions"],
            good["labels"],
            good["profiles"],
            _history(store, spark, start, commit=read_at),
            start,
        )
        _publish(store, spec.batch, frames, result, record)
        for frame in (*good.values(), frames["transactions_features"], *raw.values()):
            frame.unpersist()
    return result


def _landed(project: Project, batch: str) -> dict[str, str]:
    """The batch's landed files (name -> path); an :class:`EtlError` if it is missing or incomplete."""
    batch_dir = f"{LANDING}/{batch}"
    if not project.fs.exists(batch_dir):
        raise EtlError(f"no landing batch {project.fs.uri(batch_dir)}")
    if not project.fs.is_published(batch_dir):
        raise EtlError(
            f"batch {batch} is not complete: {project.fs.uri(batch_dir)} has no _SUCCESS",
            hint="the upstream writes _SUCCESS when the batch is whole; wait for it",
        )
    return {name: landed_file(project.fs, batch_dir, name) for name in FILES}


def _suites(spec: EtlSpec, start: datetime) -> dict[str, list[dict[str, Any]]]:
    """Each file's expectation suite, for the batch's day."""
    directory = spec.expectations_dir or Path(__file__).parent / "expectations"
    # Naive UTC datetimes: what Spark (session time zone UTC) hands GX for a timestamp column.
    day_start = start.replace(tzinfo=None)
    substitutions = {"batch_start": day_start, "batch_end": day_start + timedelta(days=1)}
    return {name: load_suite(name, substitutions, directory) for name in FILES}


def _clean(
    raw: dict[str, DataFrame],
    rules: dict[str, list[RowRule]],
    store: featurestore.FeatureStore,
    spark: SparkSession,
    start: datetime,
    read_at: int | None,
) -> tuple[dict[str, DataFrame], dict[str, DataFrame]]:
    """(good rows, quarantined rows with their ``_reason``) of each file: malformed records and rules
    broken; transactions normalised and deduplicated; labels of no known transaction set aside."""
    good, bad = {}, {}
    normalised = {**raw, "transactions": fraud.normalise(raw["transactions"])}
    for name, frame in normalised.items():
        good[name], bad[name] = split_bad(frame, rules[name])
    good["transactions"] = fraud.dedupe(good["transactions"]).cache()
    known = good["transactions"].select("tid", "cc_num", "ts")
    earlier = _history(store, spark, start, LABEL_LOOKBACK, read_at)
    if earlier is not None:
        known = known.unionByName(earlier.select("tid", "cc_num", "ts"))
    labels, orphans = fraud.match_labels(good["labels"], known, bad["transactions"])
    good["labels"] = labels.cache()
    bad["labels"] = bad["labels"].unionByName(orphans, allowMissingColumns=True)
    return good, bad


def _quarantine(project: Project, batch: str, bad: dict[str, DataFrame], result: EtlResult) -> None:
    """Write the set-aside rows to ``Resources/quarantine/<batch>/`` (replacing a rerun's); their
    counts per file and per reason into ``result``."""
    where = f"{QUARANTINE}/{batch}"
    with step(result.seconds, batch, "quarantine"), project.fs.publish(where, overwrite=True) as out:
        for name, frame in bad.items():
            frame = frame.cache()
            counts = {row["_reason"]: row["count"] for row in frame.groupBy("_reason").count().collect()}
            result.reasons.update({f"{name}: {reason}": n for reason, n in counts.items()})
            result.quarantined[name] = sum(counts.values())
            if result.quarantined[name]:
                frame.write.json(out.spark_uri(name))
    result.quarantine_uri = project.fs.uri(where)


def _validate(
    project: Project,
    batch: str,
    good: dict[str, DataFrame],
    suites: dict[str, list[dict[str, Any]]],
    result: EtlResult,
    record: RunRecord,
) -> None:
    """Great Expectations over every clean record; the report (results and Data Docs) published to
    ``Logs/validation/<run id>/``. A failed critical expectation rejects the batch."""
    with step(result.seconds, batch, "validation"), tempfile.TemporaryDirectory(prefix="gx-docs-") as docs:
        report = validate(good, suites, Path(docs))
        summary = {
            "success": report.success,
            "evaluated": report.evaluated,
            "failures": [f.__dict__ for f in report.failures],
            "on_failure": {
                name: {f"{e['type']}({e['kwargs'].get('column', '')})": e["on_failure"] for e in suite}
                for name, suite in suites.items()
            },
            "quarantined": result.reasons,
        }
        result.report_uri = publish_dir(
            project,
            f"{VALIDATION_LOGS}/{record.run_id}",
            Path(docs),
            {"results.json": json.dumps(summary, indent=2, default=str)},
        )
    result.validation = report
    record.params["validation"] = {"success": report.success, "failures": len(report.failures)}
    if not report.success:
        failed = "; ".join(f.describe() for f in report.critical)
        raise BatchRejected(
            f"batch {batch} rejected, nothing published: {len(report.critical)} "
            f"critical expectation(s) failed ({failed}); report {result.report_uri}"
        )


def _publish(
    store: featurestore.FeatureStore,
    batch: str,
    frames: dict[str, DataFrame],
    result: EtlResult,
    record: RunRecord,
) -> None:
    """One publish: every group's commit becomes visible together, or none does."""
    seconds = result.seconds
    with step(seconds, batch, "commit and online write"), store.publish(run=record) as publish:
        for name, frame in frames.items():
            group = GROUPS[name]
            feature_group = store.get_or_create_feature_group(
                name,
                1,
                primary_key=group.key,
                event_time=group.event_time,
                description=group.description,
                online_enabled=group.online,
            )
            with step(seconds, batch, f"insert {name}"):
                result.commits[name] = publish.insert(feature_group, frame)
    result.unchanged = [ref.split(".", 1)[1].rsplit("_", 1)[0] for ref in publish.unchanged]
    seconds["commit and online write"] -= sum(v for k, v in seconds.items() if k.startswith("insert "))

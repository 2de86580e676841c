"""Great Expectations (1.x) validation of Spark DataFrames, with suites kept as data.

A suite is a JSON file in ``jobs/etl/expectations/``: expectations by GX type name and kwargs, each
with what a failure does (``on_failure``):

- ``reject``: the batch is rejected and nothing is published;
- ``quarantine``: the rows that break it are set aside with the column and the rule as their reason
  (:func:`row_rules`) and the batch goes on, unless they are more than ``max_fraction`` of it (1%
  unless given): that many broken rows is a broken batch, and rejects it. Only row-wise expectations
  (not null, between, in set) can quarantine;
- ``warn``: recorded in the report only.

``$batch_start`` and ``$batch_end`` in kwargs are replaced by the batch's day. Every record is
checked (GX runs the expectations as Spark aggregations over the whole DataFrame). Results are
returned in a compact form and rendered as HTML Data Docs into the given directory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTATIONS_DIR = Path(__file__).parent / "expectations"
ACTIONS = ("reject", "quarantine", "warn")
MAX_QUARANTINED_FRACTION = 0.01
QUARANTINABLE = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
)


@dataclass
class RowRule:
    """A ``quarantine`` expectation as a row predicate: ``broken`` is true for a row that breaks it."""

    suite: str
    reason: str  # names the column and the rule: "amount: outside [0, 100000]"
    broken: Any  # a Spark Column
    max_fraction: float


@dataclass
class Failure:
    suite: str
    expectation: str
    column: str | None
    on_failure: str
    unexpected: int | None
    observed: Any = None
    error: str | None = None

    def describe(self) -> str:
        what = f"{self.expectation}({self.column})" if self.column else self.expectation
        if self.error:
            return f"{self.suite}: {what}: could not be evaluated: {self.error}"
        if self.unexpected:
            return f"{self.suite}: {what}: {self.unexpected} rows"
        return f"{self.suite}: {what}" + (f": observed {self.observed}" if self.observed is not None else "")


@dataclass
class ValidationReport:
    success: bool
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    docs_index: str | None = None

    @property
    def critical(self) -> list[Failure]:
        """Failures that reject the batch (a quarantine rule failing on the rows it kept is one)."""
        return [f for f in self.failures if f.on_failure != "warn"]

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.on_failure == "warn"]


def load_suite(
    name: str, substitutions: dict[str, Any], directory: Path = EXPECTATIONS_DIR
) -> list[dict[str, Any]]:
    """The expectations of suite ``name`` with ``$name`` placeholders substituted; checked up front."""
    path = directory / f"{name}.json"
    data = json.loads(path.read_text())
    expectations, seen = [], set()
    for i, item in enumerate(data["expectations"]):
        domain = (item["type"], item["kwargs"].get("column"))
        if domain in seen:  # GX keeps only one expectation per type and column: the other would vanish
            raise ValueError(f"{path}: expectation {i} repeats {domain[0]} on column {domain[1]!r}")
        seen.add(domain)
        if "severity" in item:
            raise ValueError(
                f"{path}: expectation {i}: 'severity' is now 'on_failure' ({', '.join(ACTIONS)})"
            )
        action = item.get("on_failure", "reject")
        if action not in ACTIONS:
            raise ValueError(f"{path}: expectation {i} has on_failure {action!r}, not one of {ACTIONS}")
        if action == "quarantine" and item["type"] not in QUARANTINABLE:
            raise ValueError(
                f"{path}: expectation {i} ({item['type']}) cannot quarantine rows: only "
                f"{', '.join(QUARANTINABLE)} judge one row at a time"
            )
        fraction = item.get("max_fraction", MAX_QUARANTINED_FRACTION)
        if not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise ValueError(f"{path}: expectation {i} has max_fraction {fraction!r}, not a number in [0, 1]")
        kwargs = {
            k: substitutions.get(v[1:], v) if isinstance(v, str) and v.startswith("$") else v
            for k, v in item["kwargs"].items()
        }
        expectations.append(
            {"type": item["type"], "kwargs": kwargs, "on_failure": action, "max_fraction": fraction}
        )
    return expectations


def row_rules(name: str, suite: list[dict[str, Any]]) -> list[RowRule]:
    """The suite's ``quarantine`` expectations as Spark row predicates, in suite order (a row broken
    by several is quarantined with the first one's reason). As in GX, a null breaks only not-null."""
    from pyspark.sql import functions as F

    rules = []
    for item in suite:
        if item["on_failure"] != "quarantine":
            continue
        kwargs = item["kwargs"]
        column = F.col(kwargs["column"])
        if item["type"] == "expect_column_values_to_not_be_null":
            reason, broken = "missing", column.isNull()
        elif item["type"] == "expect_column_values_to_be_between":
            low, high = kwargs.get("min_value"), kwargs.get("max_value")
            below = column < F.lit(low) if low is not None else F.lit(False)
            above = column > F.lit(high) if high is not None else F.lit(False)
            reason = (
                f"outside [{low}, {high}]" if low is not None and high is not None
                else f"below {low}" if low is not None else f"above {high}"
            )  # fmt: skip
            broken = column.isNotNull() & (below | above)
        else:
            allowed = kwargs["value_set"]
            reason, broken = f"not one of {allowed}", column.isNotNull() & ~column.isin(allowed)
        rules.append(RowRule(name, f"{kwargs['column']}: {reason}", broken, item["max_fraction"]))
    return rules


def validate(
    frames: dict[str, Any], suites: dict[str, list[dict[str, Any]]], docs_dir: Path
) -> ValidationReport:
    """Validate each Spark DataFrame in ``frames`` against the suite of the same name.

    A suite runs first with ``BOOLEAN_ONLY`` results: GX then skips collecting unexpected values, one
    Spark job less per expectation. Only a suite that fails runs again with ``SUMMARY`` results, for
    the row counts and examples a rejection names (and its Data Docs page).
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no phoning home
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(
        site_name="fjord",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    source = context.data_sources.add_spark(name="etl")
    failures: list[Failure] = []
    evaluated, success = 0, True
    for name, frame in frames.items():
        batch_definition = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe("whole")
        suite = gx.ExpectationSuite(name=name)
        for item in suites[name]:
            suite.add_expectation_configuration(
                ExpectationConfiguration(
                    type=item["type"], kwargs=item["kwargs"], meta={"on_failure": item["on_failure"]}
                )
            )
        suite = context.suites.add(suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch_definition, suite=suite)
        )

        result = _run_checkpoint(context, name, definition, frame, "BOOLEAN_ONLY")
        if not result.success:
            result = _run_checkpoint(context, name, definition, frame, "SUMMARY")
        for suite_result in result.run_results.values():
            for r in suite_result.results:
                evaluated += 1
                if r.success:
                    continue
                action = r.expectation_config.meta.get("on_failure", "reject")
                success = success and action == "warn"
                details = r.result or {}
                info = r.exception_info or {}
                error = info.get("exception_message") if info.get("raised_exception") else None
                failures.append(
                    Failure(
                        name,
                        r.expectation_config.type,
                        r.expectation_config.kwargs.get("column"),
                        action,
                        details.get("unexpected_count"),
                        details.get("observed_value"),
                        " ".join(str(error).split())[:300] if error else None,
                    )
                )
    index = docs_dir / "index.html"
    return ValidationReport(success, evaluated, failures, str(index) if index.exists() else None)


def _run_checkpoint(context: Any, name: str, definition: Any, frame: Any, result_format: str) -> Any:
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{name}-{result_format.lower()}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="docs", site_names=["fjord"])],
            result_format={"result_format": result_format},
        )
    )
    return checkpoint.run(batch_parameters={"dataframe": frame})

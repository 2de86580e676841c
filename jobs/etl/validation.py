"""Great Expectations (1.x) validation of Spark DataFrames, with suites kept as data.

A suite is a JSON file in ``jobs/etl/expectations/``: expectations by GX type name and kwargs, each
``critical`` (a failure rejects the batch) or ``warning`` (recorded only). ``$batch_start`` and
``$batch_end`` in kwargs are replaced by the batch's day. Every record is checked (GX runs the
expectations as Spark aggregations over the whole DataFrame). Results are returned in a compact form
and rendered as HTML Data Docs into the given directory.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTATIONS_DIR = Path(__file__).parent / "expectations"
SEVERITIES = ("critical", "warning")


@dataclass
class Failure:
    suite: str
    expectation: str
    column: str | None
    severity: str
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
        return [f for f in self.failures if f.severity == "critical"]

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == "warning"]


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
        severity = item.get("severity", "critical")
        if severity not in SEVERITIES:
            raise ValueError(f"{path}: expectation {i} has severity {severity!r}, not one of {SEVERITIES}")
        kwargs = {
            k: substitutions.get(v[1:], v) if isinstance(v, str) and v.startswith("$") else v
            for k, v in item["kwargs"].items()
        }
        expectations.append({"type": item["type"], "kwargs": kwargs, "severity": severity})
    return expectations


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
                    type=item["type"], kwargs=item["kwargs"], meta={"severity": item["severity"]}
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
                severity = r.expectation_config.meta.get("severity", "critical")
                success = success and severity != "critical"
                details = r.result or {}
                info = r.exception_info or {}
                error = info.get("exception_message") if info.get("raised_exception") else None
                failures.append(
                    Failure(
                        name,
                        r.expectation_config.type,
                        r.expectation_config.kwargs.get("column"),
                        severity,
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

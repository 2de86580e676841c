"""The feature pipeline job on ETL output: the view, a training dataset with its URI, lineage, bad input."""

from __future__ import annotations

import pytest

import featurestore
from fjord.errors import ConfigError
from fjord.jobmain import run_job
from fjord.lineage import child_runs, get_run, lineage_graph, raw_sources
from fjord.projects import create_project
from jobs.etl.demo_data import DemoSpec, generate
from jobs.etl.job import EtlSpec
from jobs.etl.job import run as run_etl
from jobs.features.job import FeaturesError, FeaturesSpec, run


@pytest.fixture
def landed(spark):
    project = create_project("fraud")
    batches = generate(project.fs, DemoSpec(rows=2_000, days=2, seed=7))
    for batch in batches:
        run_etl(EtlSpec(project="fraud", batch=batch, validate_data=False))
    return project


def test_the_job_builds_the_view_and_a_training_dataset_in_a_run_tree(landed, tmp_path, capsys) -> None:
    with_parent = run(FeaturesSpec(project="fraud", run_id="features-1", parent_run_id="dag-run-1"))
    assert with_parent.view == "fraud_demo" and with_parent.training_dataset_version == 1
    assert with_parent.rows > 0 and 0 < with_parent.label_rate < 0.5
    assert with_parent.uri == landed.fs.uri("TrainingDatasets/fraud_demo_1/1")  # from the registry
    assert landed.fs.is_published("TrainingDatasets/fraud_demo_1/1")
    assert get_run("features-1").stage == "training_dataset"
    assert [r.run_id for r in child_runs("dag-run-1")] == ["features-1"]
    graph = lineage_graph(with_parent.uri, "1")
    assert {a.uri.rsplit("/", 2)[-2] for a in raw_sources(graph)} == {"2026-11-01", "2026-11-02"}
    view = featurestore.connect("fraud").get_feature_view("fraud_demo", 1)
    assert view.training_dataset_uri(1) == with_parent.uri

    definition = tmp_path / "view.yaml"
    definition.write_text(
        "name: small\nlabels: [is_fraud]\nbase: {group: fraud_labels, features: [is_fraud]}\n"
        "joins:\n  - {group: transactions_features, features: [amount], keys: [tid]}\n"
    )
    assert run_job(FeaturesSpec, run, "doc", ["--project", "fraud", "--definition", str(definition)]) == 0
    assert "feature view small v1: training dataset v1" in capsys.readouterr().out


def test_bad_definitions_get_one_line(spark, tmp_path) -> None:
    create_project("fraud")  # refused before any data is read: no batches needed
    with pytest.raises(FeaturesError, match="no built-in feature view 'nope'"):
        run(FeaturesSpec(project="fraud", view="nope"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: v\nbase: {group: fraud_labels}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: base.features: Field required"):
        run(FeaturesSpec(project="fraud", definition=bad))
    bad.write_text("name: v\nbase: {group: unknown_group, features: [x]}\n")
    with pytest.raises(FeaturesError, match=r"unknown feature group fraud\.unknown_group"):
        run(FeaturesSpec(project="fraud", definition=bad))
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        run(FeaturesSpec(project="fraud", definition=bad))
    with pytest.raises(ConfigError, match="cannot read"):
        run(FeaturesSpec(project="fraud", definition=tmp_path / "missing.yaml"))

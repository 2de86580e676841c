from pathlib import Path

import pytest

from fjord.errors import NotFoundError
from fjord.lineage import (
    child_runs,
    code_version,
    get_run,
    lineage_graph,
    list_runs,
    producer_of,
    raw_sources,
    track_run,
    walk,
)
from fjord.projects import create_project


@pytest.fixture
def project():
    return create_project("fraud")


def test_track_run_records_success(project) -> None:
    with track_run(project, "etl", params={"batch": "b1"}, code=[Path(__file__)]) as run:
        assert get_run(run.run_id).status == "running"
        run.add_input("file:///raw/b1", "sha256:aa", kind="raw")
        run.add_output("file:///fs/fg/tx", "3", kind="feature_group")
    record = get_run(run.run_id)
    assert record.status == "succeeded" and record.ended_at is not None
    assert record.params == {"batch": "b1"}
    assert record.code_version.startswith(("git:", "sha256:"))
    assert len(record.env_lock_hash) == 16
    assert project.fs.exists(f"Logs/runs/{run.run_id}.json")


def test_a_run_id_names_one_run(project) -> None:
    """A task's retry reuses its run id; another stage's (or project's) run keeps its record."""
    from fjord.errors import AlreadyExistsError

    with pytest.raises(ValueError), track_run(project, "train", run_id="train-7"):
        raise ValueError("the first try fails")
    with track_run(project, "train", run_id="train-7") as retry:  # the retry: same stage, same id
        retry.add_output("file:///fs/Models/fraud/1", "1", kind="model")
    refused = pytest.raises(AlreadyExistsError, match="names a train run of project fraud")
    with refused, track_run(project, "deploy", run_id="train-7"):
        pass
    assert get_run("train-7").stage == "train" and get_run("train-7").status == "succeeded"


def test_track_run_records_failure_and_reraises(project) -> None:
    with pytest.raises(ValueError, match="bad batch"), track_run(project, "etl") as run:
        raise ValueError("bad batch:\n cc_num is null")
    record = get_run(run.run_id)
    assert record.status == "failed"
    assert record.error == "bad batch: cc_num is null"


def test_walk_back_from_prediction_model_to_raw_batch(project) -> None:
    with track_run(project, "etl") as etl:
        etl.add_input("file:///raw/b1", "sha256:aa")
        etl.add_output("fg://tx", "c1")
    with track_run(project, "etl") as etl2:
        etl2.add_input("file:///raw/b2", "sha256:bb")
        etl2.add_output("fg://tx", "c2")
    with track_run(project, "training_dataset") as td:
        td.add_input("fg://tx", "c1")
        td.add_input("fg://labels", "c9")  # produced by no recorded run: a raw source
        td.add_output("td://fraud", "1")
    with track_run(project, "train") as train:
        train.add_input("td://fraud", "1")
        train.add_output("model://fraud/", "7")

    tree = lineage_graph("model://fraud", "7")
    assert tree.run is not None and tree.run.run_id == train.run_id
    assert [n.run.run_id for n in tree.inputs if n.run] == [td.run_id]
    sources = {(a.uri, a.version) for a in raw_sources(tree)}
    assert sources == {("file:///raw/b1", "sha256:aa"), ("fg://labels", "c9")}  # not b2: commit c2 unused
    assert producer_of("fg://tx").run_id == etl2.run_id  # newest, without a version


def test_failed_runs_are_not_producers(project) -> None:
    with pytest.raises(RuntimeError), track_run(project, "etl") as run:
        run.add_output("fg://tx", "c1")
        raise RuntimeError("validation failed")
    assert producer_of("fg://tx", "c1") is None


def test_cycles_stop_the_walk(project) -> None:
    with track_run(project, "a") as a:
        a.add_input("x://2", "1")
        a.add_output("x://1", "1")
    with track_run(project, "b") as b:
        b.add_input("x://1", "1")
        b.add_output("x://2", "1")
    graph = lineage_graph("x://1", "1")
    assert graph.inputs[0].inputs[0] is graph  # the cycle closes on the same node
    assert [n.artifact.uri for n in walk(graph)] == ["x://1", "x://2"]


def test_list_and_unknown_runs(project) -> None:
    with track_run(project, "etl"):
        pass
    with track_run(project, "train"):
        pass
    assert [r.stage for r in list_runs(project="fraud")] == ["train", "etl"]
    assert [r.stage for r in list_runs(stage="etl")] == ["etl"]
    with pytest.raises(NotFoundError, match="unknown run 'nope'"):
        get_run("nope")


def test_code_version_is_a_content_hash_outside_git(tmp_path: Path) -> None:
    job = tmp_path / "job.py"
    job.write_text("print(1)\n")
    first = code_version([job])
    assert first.startswith("sha256:")
    assert code_version([tmp_path]) == first  # a directory hashes its *.py files
    job.write_text("print(2)\n")
    assert code_version([job]) != first
    assert code_version([]) == "unknown"


def _daily_batches(project, days: int) -> None:
    """ETL runs as the job records them: each reads its landing file and the previous commit of all
    three groups, and writes one commit per group."""
    groups = ("fg://tx", "fg://labels", "fg://profiles")
    for day in range(1, days + 1):
        with track_run(project, "etl") as etl:
            etl.add_input(f"file:///landing/{day}/transactions.parquet", f"sha256:{day}")
            for group in groups:
                if day > 1:
                    etl.add_input(group, str(day - 1))
                etl.add_output(group, str(day))


def test_a_long_shared_history_is_walked_once_per_artifact_without_truncation(project) -> None:
    days = 250  # beyond the old walk's max_depth of 200, and 3**250 paths for a tree walk
    _daily_batches(project, days)
    graph = lineage_graph("fg://tx", str(days))
    nodes = list(walk(graph))
    # tx's last commit, every earlier commit of the three groups, and every landing file: once each
    assert len(nodes) == 1 + 3 * (days - 1) + days
    landed = {a.version for a in raw_sources(graph)}
    assert landed == {f"sha256:{d}" for d in range(1, days + 1)}  # the first batch too: nothing cut
    assert len({id(n) for n in nodes}) == len(nodes)


def test_without_a_version_the_newest_is_walked(project) -> None:
    _daily_batches(project, 3)
    graph = lineage_graph("fg://labels")
    assert graph.artifact.version == "3" and graph.run is not None


def test_parent_and_child_runs_form_one_tree(project) -> None:
    with track_run(project, "dag") as dag:
        with track_run(project, "etl", parent_run_id=dag.run_id):
            pass
        with track_run(project, "train", parent_run_id=dag.run_id):
            pass
    assert [r.stage for r in child_runs(dag.run_id)] == ["etl", "train"]
    assert child_runs("nobody") == []


def test_an_older_database_gains_new_columns(tmp_path) -> None:
    from sqlalchemy import Column, MetaData, String, Table, create_engine, inspect

    from fjord.metadata import ensure_tables

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    Table("t", MetaData(), Column("a", String(8), primary_key=True)).create(engine)
    newer = MetaData()
    Table("t", newer, Column("a", String(8), primary_key=True), Column("b", String(8), index=True))
    ensure_tables(newer, engine)
    assert {c["name"] for c in inspect(engine).get_columns("t")} == {"a", "b"}
    assert [i["column_names"] for i in inspect(engine).get_indexes("t")] == [["b"]]


def test_lineage_show_summarises_a_long_chain_then_draws_it_to_a_depth(project, capsys, tmp_path) -> None:
    """60 daily batches, each ETL building on the previous commit: the summary names every raw batch
    with its checksum, the tree stops at --depth, --json has the whole graph, and a local path works."""
    import json

    from fjord.cli.main import main

    for day in range(60):
        with track_run(project, "etl") as etl:
            etl.add_input(f"file:///landing/2026-{day:03d}", f"sha256:{day:04x}", kind="raw")
            if day:
                etl.add_input("fg://tx", str(day - 1), kind="feature_group")
            etl.add_output("fg://tx", str(day), kind="feature_group")
    model = tmp_path / "Models" / "fraud" / "1"
    with track_run(project, "train") as train:
        train.add_input("fg://tx", "59", kind="feature_group")
        train.add_output(model.as_uri(), "1", kind="model")

    assert main(["lineage", "show", str(model), "--depth", "3"]) == 0
    out = capsys.readouterr().out
    assert "raw inputs (60):" in out and "file:///landing/2026-000  sha256:0000" in out
    assert "feature_group (60): tx@0, tx@1" in out and "... 2 input(s) further back" in out
    assert main(["lineage", "show", model.as_uri(), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert len(shown["summary"]["raw_inputs"]) == 60 and shown["summary"]["made_by"]["stage"] == "train"
    depth, node = 0, shown["graph"]
    while upstream := [i for i in node.get("inputs", []) if i.get("kind") == "feature_group"]:
        node, depth = upstream[0], depth + 1
    assert depth == 60 and node["version"] == "0"  # the whole chain, down to day 0's commit
    assert main(["lineage", "runs", "--project", "fraud", "--stage", "train", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == [train.run_id]

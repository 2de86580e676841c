from pathlib import Path

import pytest

from fjord.errors import NotFoundError
from fjord.lineage import (
    code_version,
    get_run,
    lineage_tree,
    list_runs,
    producer_of,
    raw_sources,
    track_run,
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

    tree = lineage_tree("model://fraud", "7")
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
    tree = lineage_tree("x://1", "1")
    assert tree.inputs[0].inputs[0].cycle


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

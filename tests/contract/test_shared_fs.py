"""One contract for every shared-filesystem backend: what each pipeline stage relies on."""

import pytest

from fjord.errors import AlreadyExistsError, PathEscapeError
from fjord.fs import SharedFS, shared_root
from fjord.lineage import get_run, track_run
from fjord.projects import LAYOUT, create_project, get_project, list_projects


@pytest.fixture
def root(storage_root: str) -> SharedFS:
    return shared_root()


def test_write_read_list(root: SharedFS) -> None:
    root.write_text("a/b/c.txt", "hello")
    root.write_bytes("a/d.bin", b"\x00\x01")
    assert root.read_text("a/b/c.txt") == "hello"
    assert root.listdir("a") == ["b", "d.bin"]
    assert root.exists("a/b") and not root.exists("a/zzz")
    root.write_text("a/b/c.txt", "again")
    assert root.read_text("a/b/c.txt") == "again"
    root.rm("a", recursive=True)
    assert not root.exists("a/b/c.txt")


def test_publish_contract(root: SharedFS, tmp_path) -> None:
    with root.publish("data/batch") as out:
        out.write_text("part-0.csv", "x\n1\n")
        out.write_text("nested/part-1.csv", "x\n2\n")
        assert not root.is_published("data/batch")
        assert root.listdir("data") == []
    assert root.is_published("data/batch")
    assert root.read_text("data/batch/nested/part-1.csv") == "x\n2\n"
    assert root.publication("data/batch")["files"] == 2
    assert root.listdir("data", include_hidden=True) == ["batch"]

    with pytest.raises(AlreadyExistsError), root.publish("data/batch"):
        pass
    with root.publish("data/batch", overwrite=True) as out:
        out.write_text("only.csv", "x\n3\n")
    assert root.listdir("data/batch") == ["only.csv"]

    with pytest.raises(RuntimeError), root.publish("data/other") as out:
        out.write_text("part-0.csv", "x")
        raise RuntimeError("writer died")
    assert not root.exists("data/other")
    assert root.listdir("data", include_hidden=True) == ["batch"]

    local = tmp_path / "archive.tar.gz"
    local.write_bytes(b"z" * 4096)
    root.upload(str(local), "Environments/archive.tar.gz")
    assert root.read_bytes("Environments/archive.tar.gz") == local.read_bytes()


def test_download_copies_a_tree_with_hidden_files(root: SharedFS, tmp_path) -> None:
    root.write_text("model/saved_model.pb", "graph")
    root.write_text("model/variables/variables.index", "index")
    root.write_text("model/.fingerprint", "fp")
    root.download("model", tmp_path / "out")
    found = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert found == {"saved_model.pb", "variables/variables.index", ".fingerprint"}
    assert (tmp_path / "out" / "variables" / "variables.index").read_text() == "index"


def test_paths_stay_inside(root: SharedFS) -> None:
    for bad in ("../x", "/abs", "s3://other/key", "a/../../x"):
        with pytest.raises(PathEscapeError):
            root.path(bad)


def test_projects_and_run_records_on_the_backend(storage_root: str) -> None:
    project = create_project("fraud", description="on " + storage_root.split(":")[0])
    assert project.root_uri.startswith(storage_root)
    for folder in LAYOUT:
        assert project.fs.exists(folder)
    assert [p.name for p in list_projects()] == ["fraud"]
    assert get_project("fraud").description == project.description
    with track_run(project, "etl") as run:
        run.add_output(project.fs.uri("FeatureStore/x"), "1")
    assert get_run(run.run_id).status == "succeeded"
    assert project.fs.exists(f"Logs/runs/{run.run_id}.json")

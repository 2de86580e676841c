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


def test_local_copy_is_the_tree_on_local_disk(root: SharedFS) -> None:
    root.write_text("run/trial/weights.txt", "w")
    root.write_text("run/trial/sub/.hidden", "h")
    with root.local_copy("run/trial") as local:
        assert local is not None and (local / "weights.txt").read_text() == "w"
        assert (local / "sub" / ".hidden").read_text() == "h"
    with root.local_copy("run/none") as missing:
        assert missing is None


def _append_rows(uri: str, writer: int, commits: int) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from fjord.fs import object_store_options as storage_options

    for i in range(commits):
        write_deltalake(
            uri, pa.table({"writer": [writer], "i": [i]}), mode="append", storage_options=storage_options(uri)
        )


def test_concurrent_delta_commits_lose_nothing(root: SharedFS) -> None:
    """Writers racing for the same table version: each commit lands once (put-if-absent of the next
    _delta_log entry: a rename that refuses to replace on disks and HDFS, If-None-Match on S3)."""
    import multiprocessing

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from fjord.fs import object_store_options as storage_options

    uri = root.uri("FeatureStore/race_1")
    write_deltalake(uri, pa.table({"writer": [0], "i": [0]}), storage_options=storage_options(uri))
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_rows, args=(uri, w, 6)) for w in (1, 2, 3)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(180)
        assert process.exitcode == 0
    table = DeltaTable(uri, storage_options=storage_options(uri))
    assert table.version() == 18
    rows = table.to_pyarrow_table()
    assert rows.num_rows == 19
    assert sorted(zip(rows["writer"].to_pylist(), rows["i"].to_pylist(), strict=True)) == [(0, 0)] + [
        (w, i) for w in (1, 2, 3) for i in range(6)
    ]

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fjord.config import ConfigError
from fjord.errors import AlreadyExistsError, NotFoundError, PathEscapeError
from fjord.fs import SUCCESS, SharedFS, backend_for


@pytest.fixture
def root(tmp_path: Path) -> SharedFS:
    return SharedFS((tmp_path / "root").as_uri())


def test_backend_is_chosen_by_scheme() -> None:
    assert backend_for("file:///tmp/x").scheme == "file"
    assert backend_for("s3://bucket/prefix").scheme == "s3"
    assert backend_for("s3://bucket/prefix").object_store is True
    with pytest.raises(ConfigError, match="unsupported filesystem URI 'ftp://host/x'"):
        backend_for("ftp://host/x")


def test_uris_for_libraries_and_spark(root: SharedFS, tmp_path: Path) -> None:
    assert root.uri("a/b") == (tmp_path / "root" / "a" / "b").as_uri()
    assert root.spark_uri("a") == root.uri("a")
    s3 = SharedFS("s3://bucket/fjord")
    assert s3.uri("Projects/p") == "s3://bucket/fjord/Projects/p"
    assert s3.spark_uri("Projects/p") == "s3a://bucket/fjord/Projects/p"


@pytest.mark.parametrize(
    "bad", ["..", "../x", "a/../../x", "/etc/passwd", "file:///etc", "s3://b/k", "a\x00b"]
)
def test_paths_outside_the_root_are_refused(root: SharedFS, bad: str) -> None:
    with pytest.raises(PathEscapeError):
        root.path(bad)


def test_inner_dotdot_that_stays_inside_is_fine(root: SharedFS) -> None:
    assert root.path("a/../b") == root.path("b")


def test_symlink_out_of_the_root_is_refused(root: SharedFS, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    root.makedirs("d")
    os.symlink(outside, root.path("d/link"))
    with pytest.raises(PathEscapeError, match="through a symlink"):
        root.read_text("d/link/secret")
    os.symlink(root.path("d"), root.path("inner-link"))  # a symlink that stays inside is fine
    root.write_text("d/f", "ok")
    assert root.read_text("inner-link/f") == "ok"


def test_sub_root_is_confined(root: SharedFS) -> None:
    project = root.sub("Projects/p")
    with pytest.raises(PathEscapeError):
        project.path("../q")


def test_publish_is_all_or_nothing(root: SharedFS) -> None:
    with root.publish("data/a") as out:
        out.write_text("part-0.csv", "x\n1\n")
        out.write_text("sub/part-1.csv", "x\n2\n")
        assert not root.exists("data/a")  # invisible while being written
        assert root.listdir("data") == []  # the staging name is hidden
    assert root.is_published("data/a")
    assert root.read_text("data/a/sub/part-1.csv") == "x\n2\n"
    assert root.publication("data/a")["files"] == 2
    assert root.publication("data/a")["bytes"] == 8


def test_failed_publish_leaves_nothing(root: SharedFS) -> None:
    with pytest.raises(RuntimeError), root.publish("data/a") as out:
        out.write_text("part-0.csv", "x")
        raise RuntimeError("writer failed")
    assert not root.exists("data/a")
    assert root.listdir("data", include_hidden=True) == []


def test_republish_needs_overwrite(root: SharedFS) -> None:
    with root.publish("d") as out:
        out.write_text("v", "1")
    with pytest.raises(AlreadyExistsError, match="already published"), root.publish("d"):
        pass
    with root.publish("d", overwrite=True) as out:
        out.write_text("v", "2")
    assert root.read_text("d/v") == "2"
    assert root.listdir("", include_hidden=True) == ["d"]  # the old version is gone


def test_unpublished_leftover_is_replaced(root: SharedFS) -> None:
    root.write_text("d/half", "crashed between rename and marker")
    with root.publish("d") as out:
        out.write_text("whole", "1")
    assert root.listdir("d") == ["whole"]


def test_cannot_publish_or_remove_the_root(root: SharedFS) -> None:
    with pytest.raises(PathEscapeError), root.publish("."):
        pass
    with pytest.raises(PathEscapeError):
        root.rm("")


def test_write_bytes_is_atomic_and_reads_check_existence(root: SharedFS) -> None:
    root.write_bytes("f.bin", b"\x00\x01")
    root.write_bytes("f.bin", b"\x02")
    assert root.read_bytes("f.bin") == b"\x02"
    assert root.listdir("", include_hidden=True) == ["f.bin"]
    with pytest.raises(NotFoundError):
        root.read_text("missing.txt")
    with pytest.raises(NotFoundError, match="not published"):
        root.publication("missing")


def test_upload_streams_a_local_file(root: SharedFS, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(1 << 20))
    root.upload(str(local), "Environments/big.bin")
    assert root.read_bytes("Environments/big.bin") == local.read_bytes()


# Writes six files of a publish, says so, then waits for the kill mid-publish.
_STALLED_WRITER = """
import sys
from fjord.fs import SharedFS
root = SharedFS(sys.argv[1])
with root.publish("data/batch") as out:
    for i in range(6):
        out.write_text(f"part-{i:04d}.csv", "x\\n" * 1000)
    print("writing", flush=True)
    sys.stdin.read()
"""


def test_killed_writer_leaves_no_visible_partial_data(root: SharedFS) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _STALLED_WRITER, root.uri()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not root.exists("data/batch")
    assert not root.is_published("data/batch")
    assert root.listdir("data") == []  # what readers list: nothing
    leftovers = root.listdir("data", include_hidden=True)
    assert len(leftovers) == 1 and leftovers[0].startswith("_tmp.")
    assert root.clean_staging("data") == leftovers
    with root.publish("data/batch") as out:  # the next run publishes normally
        out.write_text("part-0000.csv", "x\n")
    assert root.is_published("data/batch")
    assert root.exists(f"data/batch/{SUCCESS}")


_REPLACER = """
import sys
from fjord.fs import SharedFS
root = SharedFS(sys.argv[1])
with root.publish("data/batch", overwrite=True) as out:
    out.write_text("version.txt", "new")
"""


@pytest.mark.parametrize(
    ("point", "survivor"),
    [
        ("publish_dir.journaled", "old"),
        ("publish_dir.retired", "old"),  # the old directory aside, nothing in place: it goes back
        ("publish_dir.moved", "old"),  # the new one in place but never marked: the old one goes back
        ("publish_dir.marked", "new"),  # marked: the new one stays, the old one goes
    ],
)
def test_a_replacement_killed_at_any_step_leaves_one_whole_directory(root: SharedFS, point, survivor) -> None:
    from fjord.faults import CRASH_EXIT_CODE

    with root.publish("data/batch") as out:
        out.write_text("version.txt", "old")
    env = {**os.environ, "FJORD_CRASH_AT": point}
    done = subprocess.run(
        [sys.executable, "-c", _REPLACER, root.uri()], env=env, capture_output=True, text=True
    )
    assert done.returncode == CRASH_EXIT_CODE, done.stderr
    assert root.is_published("data/batch")  # a reader settles the journal first
    assert root.read_text("data/batch/version.txt") == survivor
    assert root.listdir("data", include_hidden=True) == ["batch"]  # no journal, no copy left over
    with root.publish("data/batch", overwrite=True) as out:  # and the next replacement goes through
        out.write_text("version.txt", "newer")
    assert root.read_text("data/batch/version.txt") == "newer"


def test_a_publish_removes_what_dead_writers_of_its_name_left_and_keeps_a_live_ones(root: SharedFS) -> None:
    from fjord.fs.shared import STALE_STAGING_S

    with root.publish("data/batch") as out:
        out.write_text("part-0000.csv", "x\n")
    for name in ("_tmp.batch.dead", "_old.batch.dead", "_tmp.batch.live", "_tmp.other.dead"):
        root.write_text(f"data/{name}/part-0000.csv", "partial\n")
    old = time.time() - STALE_STAGING_S - 60
    for name in ("_tmp.batch.dead", "_old.batch.dead", "_tmp.other.dead"):
        os.utime(root.path(f"data/{name}"), (old, old))
    with root.publish("data/batch", overwrite=True) as out:
        out.write_text("part-0000.csv", "y\n")
    left = sorted(root.listdir("data", include_hidden=True))
    assert left == ["_tmp.batch.live", "_tmp.other.dead", "batch"]  # another name's: its publish cleans it
    assert root.read_text("data/batch/part-0000.csv") == "y\n"


def test_a_fork_after_an_hdfs_filesystem_was_made_does_not_hang() -> None:
    """pyspark starts its JVM with a preexec_fn, so the child runs fsspec's at-fork hook, which freed an
    hdfs-native filesystem only fsspec's cache held; its tokio runtime then waited forever in the child
    (a test worker hung in a SparkSession's start after an hdfs:// test). No server is needed."""
    script = (
        "import subprocess, fjord.fs.backends\n"
        "from hdfs_native.fsspec import HdfsFileSystem\n"
        "HdfsFileSystem(host='127.0.0.1', port=1)\n"  # made and dropped: only fsspec's cache holds it
        "subprocess.run(['true'], preexec_fn=lambda: None, check=True)\n"
        "print('forked')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "forked", done.stderr[-2000:]


def test_a_fork_does_not_free_an_unreachable_hdfs_filesystem_in_the_child() -> None:
    """An hdfs-native filesystem in a reference cycle, not collected yet, was freed by the child's
    first collection (any allocation can start one), with the same hang: a process that has used
    hdfs-native collects before each fork. The child collects on purpose here."""
    script = (
        "import gc, subprocess, fjord.fs.backends\n"
        "from hdfs_native.fsspec import HdfsFileSystem\n"
        "gc.disable()\n"
        "class Holder: pass\n"
        "h = Holder(); h.me = h\n"
        "h.fs = HdfsFileSystem(host='127.0.0.1', port=1, skip_instance_cache=True)\n"
        "del h\n"
        "gc.enable()\n"
        "subprocess.run(['true'], preexec_fn=gc.collect, check=True)\n"
        "print('forked')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "forked", done.stderr[-2000:]

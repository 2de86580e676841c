"""Publishes that die at every step, and writers that race: the feature store's commit protocol.

Each writer is a real process (``tests/integration/publish_worker.py``) killed at a crash point
(:mod:`fjord.faults`): no ``finally`` runs, as with SIGKILL. After it, readers through the API see all
of the publish or none of it, the registry and lineage agree with them, and a rerun completes it
without duplicates. The lease tests run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import update

import featurestore
from featurestore.lease import WriterBusyError, WriterLeases, _leases
from featurestore.offline import DeltaOfflineStore
from fjord.config import reset_settings
from fjord.faults import CRASH_EXIT_CODE
from fjord.lineage import producer_of
from fjord.projects import create_project
from tests.conftest import REPO
from tests.integration.publish_worker import GROUPS, groups, rows
from tests.integration.publish_worker import main as publish_day
from tests.waiting import wait_for


def _writer(mode: str, day: int, *, crash: str | None = None, hold: bool = False, wait: float | None = None):
    """A writer process; one that ``hold``s stays inside its publish until its stdin is closed."""
    env = {k: v for k, v in os.environ.items() if k != "FJORD_CRASH_AT"}
    if crash:
        env["FJORD_CRASH_AT"] = crash
    if wait is not None:
        env["FJORD_FEATURESTORE__WRITER_WAIT_SECONDS"] = str(wait)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.publish_worker",
            mode,
            str(day),
            *(["hold"] if hold else []),
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(mode: str, day: int, **kwargs) -> subprocess.CompletedProcess:
    proc = _writer(mode, day, **kwargs)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _state(names: list[str]) -> dict[str, tuple[int, list[int], float]]:
    """Per group, as readers see it: (rows, registered commit ids, sum of amounts)."""
    fs = featurestore.connect("fraud")
    found = groups(fs)
    state = {}
    for name in names:
        group = found[name]
        frame = group.read() if group.exists() else None
        rows_seen = 0 if frame is None else len(frame)
        total = 0.0 if frame is None else round(float(frame.amount.sum()), 6)
        state[name] = (rows_seen, sorted(group.commit_details()), total)
    return state


@pytest.fixture
def store(fjord_home):
    create_project("fraud")
    publish_day("three", 0)  # day 0 published: the state a crash must not disturb
    return featurestore.connect("fraud")


ONE_GROUP_POINTS = ["publish.leased", "publish.staged", "publish.delta_committed", "publish.registered",
                    "publish.online_written"]  # fmt: skip
THREE_GROUP_POINTS = ["publish.delta_committed#1", "publish.delta_committed#2", "publish.delta_committed#3",
                      "publish.registered", "publish.online_written#2"]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "point"),
    [("one", p) for p in ONE_GROUP_POINTS] + [("three", p) for p in THREE_GROUP_POINTS],
)
def test_a_publish_killed_at_any_step_is_all_or_nothing_and_a_rerun_completes_it(store, mode, point) -> None:
    names = ["tx"] if mode == "one" else list(GROUPS)
    before = _state(names)
    crashed = _run(mode, 1, crash=point)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr
    after = _state(names)
    committed = point.startswith(("publish.registered", "publish.online_written"))
    if committed:  # past the commit point: every group has its new commit
        assert all(after[n][0] == before[n][0] + 50 and len(after[n][1]) == 2 for n in names)
        for name in names:
            run = producer_of(groups(store)[name].location, str(after[name][1][-1]))
            assert run is not None and run.stage == "featurestore.publish" and run.status == "succeeded"
    else:  # before it: no group shows anything of the publish
        assert after == before
    rerun = _run(mode, 1)
    assert rerun.returncode == 0, rerun.stderr
    final = _state(names)
    for name in names:
        rows_seen, commits, total = final[name]
        assert rows_seen == 100 and len(commits) == 2  # day 0 and day 1, once each: no duplicates
        assert total == round(float(rows(0).amount.sum() + rows(1).amount.sum()), 6)
    view_groups = groups(featurestore.connect("fraud"))
    for name in names:  # the online store caught up too (the rerun finished a crashed online write)
        group = view_groups[name]
        if group.online_enabled:
            assert group.online_store.read([(group.online_table, "[7]")])[0] is not None
            assert group.registry.online_pending(group.id) == []


def test_a_failed_publish_reverts_its_delta_commits(store) -> None:
    fs = featurestore.connect("fraud")
    found = groups(fs)
    before = _state(list(GROUPS))
    with pytest.raises(featurestore.FeatureStoreError, match="duplicate"), fs.publish() as publish:
        publish.insert(found["tx"], rows(1))
        publish.insert(found["labels"], pd.concat([rows(1), rows(1).iloc[:1]]))
    assert _state(list(GROUPS)) == before
    table = DeltaOfflineStore(found["tx"].location)
    assert table.entries_since(table.latest_version() - 1)[-1].get("fjord.restored_to") == "0"


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata(request, monkeypatch, fjord_home):
    if request.param == "postgresql":
        monkeypatch.setenv("FJORD_METADATA__URL", request.getfixturevalue("postgres_db"))
        reset_settings()
    create_project("fraud")
    return request.param


def test_a_second_writer_waits_for_the_lease_then_fails_naming_the_holder(metadata) -> None:
    holder = _writer("one", 1, hold=True)
    fs = featurestore.connect("fraud")
    tx = groups(fs)["tx"]
    leases = WriterLeases(fs.registry.engine, wait=0)

    def busy() -> bool:  # true once the holder has the lease
        assert holder.poll() is None, holder.communicate()[1][-2000:]
        try:
            leases.acquire(tx.id, tx.ref)
        except WriterBusyError as exc:
            assert f"pid {holder.pid}" in str(exc) and "waited 0 s" in str(exc)
            return True
        leases.release()
        return False

    wait_for(busy, 120, "the holder to take the lease", interval=0.1)
    waiting = _writer("one", 2, wait=120)
    assert waiting.stderr is not None
    while "waiting up to 120 s for its lease" not in (line := waiting.stderr.readline()):
        assert line, f"the second writer ended without waiting: {waiting.communicate()}"
    assert f"pid {holder.pid}" in line
    holder.stdin.close()  # the holder publishes and lets go; the waiting writer goes on after it
    assert holder.wait(timeout=120) == 0
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert _state(["tx"])["tx"][:2] == (100, [0, 1])


def test_concurrent_writers_each_commit_once(metadata) -> None:
    writers = [_writer("three", day, wait=300) for day in range(3)]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    for name, (rows_seen, commits, _) in _state(list(GROUPS)).items():
        assert rows_seen == 150 and len(commits) == 3, name


def test_a_dead_or_expired_holder_loses_the_lease(metadata) -> None:
    fs = featurestore.connect("fraud")
    tx = groups(fs)["tx"]
    crashed = _run("one", 1, crash="publish.staged")  # died holding the lease
    assert crashed.returncode == CRASH_EXIT_CODE
    leases = WriterLeases(fs.registry.engine, wait=0)
    leases.acquire(tx.id, tx.ref)  # its pid is gone on this host: taken at once
    with fs.registry.engine.begin() as conn:  # now held from another host, and still valid
        conn.execute(update(_leases).values(host="elsewhere", holder="other"))
    other = WriterLeases(fs.registry.engine, wait=0.5)
    with pytest.raises(WriterBusyError, match="on elsewhere"):
        other.acquire(tx.id, tx.ref)
    with fs.registry.engine.begin() as conn:  # ... until it expires
        conn.execute(update(_leases).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    other.acquire(tx.id, tx.ref)
    other.release()
    leases.release()  # stops its renewal thread (its lease went to the other writer)


def test_a_writer_that_lost_its_lease_publishes_nothing(metadata) -> None:
    fs = featurestore.connect("fraud")
    tx = groups(fs)["tx"]
    with (
        pytest.raises(featurestore.FeatureStoreError, match="expired or was taken over"),
        fs.publish() as publish,
    ):
        publish.insert(tx, rows(1))
        with fs.registry.engine.begin() as conn:  # a successor took the lease meanwhile
            conn.execute(update(_leases).values(holder="successor"))
    assert not tx.exists()


def test_two_inserts_and_a_read_exit_0_fifty_times_out_of_fifty(fjord_home) -> None:
    """A process that inserted twice and read aborted at exit in 3 of 60 runs (exit 134): an Arrow
    thread freed the last Python file of the Delta read after the interpreter had stopped
    (apache/arrow#34314). Reads of a local root now go through Arrow's own filesystem; remote ones
    scan on the calling thread. 50 runs, three at a time, each into its own group."""
    create_project("fraud")
    env = {k: v for k, v in os.environ.items() if k != "FJORD_CRASH_AT"}

    def run(n: int) -> tuple[int, int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.insert_twice_worker", f"g{n}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        return n, done.returncode, done.stdout.strip(), done.stderr.strip()[-300:]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(run, range(50)))
    failed = [r for r in results if r[1] != 0 or r[2] != "4"]
    assert not failed, failed


def test_a_publish_that_fills_the_disk_publishes_nothing_and_the_next_one_everything(tmp_path) -> None:
    """The storage root is a 6 MB tmpfs (mounted in a mount namespace of the worker's own), filled up
    before an insert: one line, exit code 21, the group as it was; after space is freed, the same
    insert publishes whole, and no staging is left behind."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    namespace = (
        ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--user", "--map-root-user", "--mount"]
    )
    done = subprocess.run(
        [*namespace, sys.executable, "-m", "tests.integration.disk_full_worker", str(tmp_path / "tmpfs")],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["free_bytes"] < 65_536
    assert (
        report["full"].startswith("StorageFullError: file://")
        and "is full (No space left on device)" in report["full"]
    )
    assert report["exit_code"] == 21
    assert report["after_full"] == {"commits": 1, "rows": 1_000}  # nothing of the failed insert
    assert report["after_freeing"] == {"commits": 2, "rows": 21_000}
    assert report["leftovers"] == []


@pytest.mark.parametrize("point", ["publish_dir.new_moved", "training_dataset.published"])
def test_a_training_dataset_killed_mid_creation_is_never_listed_and_the_next_one_is_whole(
    store, point
) -> None:
    """Killed with its directory in place but unmarked, or published but not yet registered ready:
    readers list no such version, and the next creation publishes a whole one under a new number."""
    killed = _run("dataset", 0, crash=point)
    assert killed.returncode == CRASH_EXIT_CODE, killed.stderr[-2000:]
    view = featurestore.connect("fraud").get_feature_view("v", 1)
    assert view.get_training_dataset_versions() == []
    again = _run("dataset", 0)
    assert again.returncode == 0, again.stderr[-2000:]
    (version,) = view.get_training_dataset_versions()
    features, labels = view.get_training_data(version)
    assert len(features) == len(labels) == 50  # day 0's 50 cards, whole


def test_a_postgresql_restart_mid_publish_is_all_or_nothing_and_a_rerun_completes_it(
    postgres_db, services_home, monkeypatch
) -> None:
    """A three-group publish holds its leases with its Delta commits made when the metadata database
    restarts under it; then it goes on to its commit point."""
    from fjord.services import service_at

    monkeypatch.setenv("FJORD_METADATA__URL", postgres_db)
    reset_settings()
    create_project("fraud")
    assert _run("three", 0).returncode == 0
    names = list(GROUPS)
    before = _state(names)
    holder = _writer("three", 1, hold=True)
    fs = featurestore.connect("fraud")
    last = groups(fs)["profiles"]
    leases = WriterLeases(fs.registry.engine, wait=0)

    def inside() -> bool:  # the holder took the last group's lease: its three inserts are staged
        assert holder.poll() is None, holder.communicate()[1][-2000:]
        try:
            leases.acquire(last.id, last.ref)
        except WriterBusyError:
            return True
        leases.release()
        return False

    wait_for(inside, 120, "the holder's three inserts", interval=0.1)
    fs.registry.engine.dispose()
    server = service_at("postgres", services_home, preferred_ports=False)
    server.stop()
    server.start()
    holder.stdin.close()
    code = holder.wait(timeout=300)
    after = _state(names)
    if code == 0:  # it reconnected and committed: all three
        assert all(after[n][0] == before[n][0] + 50 and len(after[n][1]) == 2 for n in names)
    else:  # it failed at its commit point: none, and a rerun publishes all three
        assert after == before, holder.stderr.read()[-2000:]
        assert _run("three", 1).returncode == 0
        after = _state(names)
        assert all(after[n][0] == before[n][0] + 50 for n in names)
    assert _run("three", 1).stdout.strip() != ""  # the day again: no new commit, no error
    assert _state(names) == after


def test_a_lease_given_back_while_another_writer_looks_at_it_is_taken_not_a_crash(postgres_db) -> None:
    """Writers and probers take and give back one lease for three seconds on PostgreSQL: a writer that
    lost the insert race to a holder who released before it looked takes the lease on its next try."""
    from fjord.metadata import engine_for

    engine = engine_for(postgres_db)
    errors: list[BaseException] = []
    taken = [0]
    stop = time.monotonic() + 3

    def writer(wait: float) -> None:
        while time.monotonic() < stop:
            leases = WriterLeases(engine, wait=wait)
            try:
                leases.acquire(1, "fraud.tx_1")
            except WriterBusyError:
                continue
            except Exception as exc:
                errors.append(exc)
                return
            taken[0] += 1
            leases.release()

    threads = [threading.Thread(target=writer, args=(wait,)) for wait in (0, 0, 30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and taken[0] > 10

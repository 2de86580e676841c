"""Step caching's fingerprint (fjord/stepcache.py): any change of stage, argument, code or environment
makes another one; the run ids and the arguments' spelling do not. The reuse itself, on real jobs, is
tests/integration/test_stepcache.py."""

import shutil
from pathlib import Path

from fjord.stepcache import cacheable, code_hash, fingerprint_of

ARGS = {"project": "fraud", "view": "fraud_demo", "samples": 4, "passthrough": ["tid"]}


def test_each_part_of_a_fingerprint_changes_it() -> None:
    base = fingerprint_of("features", ARGS, "sha256:code", "lock-1")
    changed = [
        fingerprint_of("train", ARGS, "sha256:code", "lock-1"),  # another stage
        fingerprint_of("features", {**ARGS, "samples": 5}, "sha256:code", "lock-1"),  # a parameter
        fingerprint_of("features", {**ARGS, "start_time": "2026-12-01"}, "sha256:code", "lock-1"),
        fingerprint_of("features", ARGS, "sha256:new-code", "lock-1"),  # new code
        fingerprint_of("features", ARGS, "sha256:code", "lock-2"),  # a new environment lock
    ]
    assert len({base, *changed}) == 6


def test_run_ids_unset_arguments_and_their_spelling_do_not() -> None:
    base = fingerprint_of("features", ARGS, "c", "e")
    same = {
        **ARGS,
        "samples": "4",
        "passthrough": "tid",
        "run_id": "x",
        "parent_run_id": "y",
        "end_time": None,
    }
    assert fingerprint_of("features", same, "c", "e") == base


def test_the_code_hash_follows_the_stage_the_core_and_the_feature_store_and_nothing_else(
    tmp_path: Path,
) -> None:
    for rel in ("jobs/etl/job.py", "jobs/etl/expectations/transactions.json", "jobs/train/job.py",
                "fjord/core.py", "featurestore/store.py", "docs/etl.md"):  # fmt: skip
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    before = code_hash("etl", tmp_path)
    (tmp_path / "docs/etl.md").write_text("changed")
    (tmp_path / "jobs/train/job.py").write_text("changed")  # another stage's code
    shutil.rmtree(tmp_path / "jobs/etl/__pycache__", ignore_errors=True)
    assert code_hash("etl", tmp_path) == before
    for rel in ("jobs/etl/expectations/transactions.json", "fjord/core.py", "featurestore/store.py"):
        (tmp_path / rel).write_text("changed " + rel)
        assert code_hash("etl", tmp_path) != before, rel
        before = code_hash("etl", tmp_path)


def test_only_stages_whose_output_follows_from_their_inputs_are_cached() -> None:
    assert {s for s in ("etl", "features", "train", "bless", "deploy", "batch_inference", "skew")
            if cacheable(s)} == {"etl", "features", "train"}  # fmt: skip
    assert not cacheable("no such stage")

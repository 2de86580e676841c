"""Concurrent deploys of one project: every update of servings.json lands (it is read, changed and
written under a lock)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fjord.projects import create_project
from jobs.serve import serving


def test_concurrent_updates_lose_nothing() -> None:
    project = create_project("fraud")
    for version in (1, 2):
        with project.fs.publish(f"Models/m/{version}") as out:
            out.write_text("saved_model.pb", "")
    names = [f"s{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: serving.create_or_update(n, 1, project="fraud", model_name="m"), names))
        list(pool.map(lambda n: serving.set_labels(n, {"stable": 2}, project="fraud"), names))
    found = {s.name: s.labels for s in serving.get_servings(project="fraud")}
    assert found == {name: {"stable": 2} for name in names}


def test_a_failed_deploy_puts_the_whole_serving_back() -> None:
    """What the deployment job does when the new version never became available: every field is as
    it was (not only the labels), and a serving the failed deploy created is gone."""
    project = create_project("fraud")
    for version in (1, 2):
        with project.fs.publish(f"Models/m/{version}") as out:
            out.write_text("saved_model.pb", "")
    before = serving.create_or_update("s", 1, project="fraud", model_name="m", feature_view="view_1",
                                      transformer="a.b:c", inference_logging="ALL")  # fmt: skip
    serving.create_or_update("s", 2, project="fraud", model_name="m", feature_view="view_2",
                             transformer=None, inference_logging="NONE")  # fmt: skip
    serving.restore("s", before, project="fraud")
    assert serving.get_serving("s", project="fraud") == before
    serving.create_or_update("new", 2, project="fraud", model_name="m")
    serving.restore("new", None, project="fraud")
    assert not serving.exists("new", project="fraud")
    assert [c.name for c in serving.read_config(project="fraud")] == ["s"]

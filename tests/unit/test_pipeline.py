"""The one pipeline definition (fjord/pipeline.py): the order its users run it in, how a step's
references resolve, and the project settings' errors."""

from pathlib import Path

import pytest

from fjord.errors import ConfigError
from fjord.pipeline import DEMO_PIPELINE, STAGES, load_pipeline_config, training_pipeline


def test_every_step_runs_after_the_steps_whose_results_it_takes_and_names_a_known_stage() -> None:
    pipeline = training_pipeline(load_pipeline_config(), replay_hours=24)
    done: set[str] = set()
    for step in pipeline.steps():
        assert step.stage in STAGES, step.task_id
        taken: list[str] = []
        step.arguments(lambda name: name, lambda task, key, taken=taken: taken.append(task))
        assert set(taken) <= done, f"{step.task_id} takes the result of {set(taken) - done} before it ran"
        done.add(step.task_id)
    assert [s.task_id for s in pipeline.training] == [
        "training_dataset", "model.train", "model.bless", "model.deploy",
    ]  # fmt: skip


def test_a_step_resolves_parameters_and_results_to_values_or_templates_alike() -> None:
    train = training_pipeline(load_pipeline_config()).step("model.train")
    values = train.arguments(
        {"project": "p", "feature_view": "v", "samples": 3, "epochs": 1}.__getitem__,
        lambda task, key: {"training_dataset": {"training_dataset_version": 7}}[task][key],
    )
    assert values == {"project": "p", "model_name": "fraud", "feature_view": "v",
                      "training_dataset_version": 7, "samples": 3, "epochs": 1}  # fmt: skip
    templates = train.arguments(lambda n: f"<{n}>", lambda task, key: f"<{task}.{key}>", epochs=9)
    assert templates["training_dataset_version"] == "<training_dataset.training_dataset_version>"
    assert templates["epochs"] == 9  # an argument added by the caller wins


def test_the_demos_settings_come_from_its_own_file() -> None:
    settings = load_pipeline_config()
    assert DEMO_PIPELINE.parts[-3:] == ("demo", "fraud", "pipeline.yaml")
    assert (settings.feature_view, settings.labels_group, settings.serving.feature_view) == (
        "fraud_demo", "fraud_labels", "fraud_serving",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (DEMO_PIPELINE.read_text().replace("model: fraud", "modle: fraud"), "unknown setting 'modle'"),
        ("project: [unclosed\n", "not YAML"),
        (DEMO_PIPELINE.read_text().replace("samples: 4", "samples: 0"), "search.samples"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error) as raised:
        load_pipeline_config(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_settings_file_is_one_line() -> None:
    with pytest.raises(ConfigError, match="cannot read the pipeline settings"):
        load_pipeline_config(Path("/nonexistent/pipeline.yaml"))

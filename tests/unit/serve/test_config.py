"""tensorflow_model_server's config files, read and written as it reads them."""

from __future__ import annotations

import pytest

from fjord.errors import ConfigError
from jobs.serve.config import (
    ModelConfig,
    VersionPolicy,
    read_batching_parameters,
    read_model_config,
    read_monitoring_path,
    write_model_config,
)
from jobs.serve.server import main, model_configs, parser

MODELS = """
model_config_list {
  config {
    name: "fraud"
    base_path: "/data/Models/fraud"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 4 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 4 }
  }
  config { name: "other" base_path: "hdfs://nn:8020/m" model_version_policy { all {} } }
  config { name: "third" base_path: "/m3" model_version_policy { latest { num_versions: 2 } } }
}
"""


def test_a_model_server_config_reads_every_policy_and_label(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(MODELS)
    fraud, other, third = read_model_config(path)
    assert fraud.policy == VersionPolicy("specific", specific=(3, 4))
    assert fraud.labels == {"stable": 3, "canary": 4}
    assert other.policy.kind == "all" and other.base_path == "hdfs://nn:8020/m"
    assert third.policy == VersionPolicy("latest", latest=2)
    write_model_config(tmp_path / "again.config", [fraud, other, third])
    assert read_model_config(tmp_path / "again.config") == [fraud, other, third]


def test_version_policies_choose_as_tf_serving_does():
    assert VersionPolicy().choose([1, 3, 2]) == {3}
    assert VersionPolicy("latest", latest=2).choose([1, 3, 2]) == {2, 3}
    assert VersionPolicy("all").choose([1, 2]) == {1, 2}
    assert VersionPolicy("specific", specific=(2, 9)).choose([1, 2]) == {2}
    assert VersionPolicy().choose([]) == set()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'x' } }", "needs a name and a base_path"),
        ("model_config_list { config { nme: 'x' } }", "not a valid ModelServerConfig"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
            "appears twice",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }",
            "platform 'pytorch'",
        ),
    ],
)
def test_bad_model_configs_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        read_model_config(path)
    assert str(path) in str(caught.value)


def test_batching_and_monitoring_files(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 2 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 64\n"
    )
    params = read_batching_parameters(batching)
    assert (params.max_batch_size, params.batch_timeout_micros, params.allowed_batch_sizes) == (
        64,
        2000,
        (8, 64),
    )
    assert params.max_enqueued_batches == 10  # left out: the default
    batching.write_text("max_batch_size { value: 64 }\nallowed_batch_sizes: 8\n")
    with pytest.raises(ConfigError, match="end with max_batch_size"):
        read_batching_parameters(batching)
    batching.write_text("max_batch_sise { value: 64 }\n")
    with pytest.raises(ConfigError, match="not a valid BatchingParameters"):
        read_batching_parameters(batching)
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }')
    assert read_monitoring_path(monitoring) == "/metrics"
    monitoring.write_text("prometheus_config { enable: false }")
    assert read_monitoring_path(monitoring) is None


def test_flags_need_one_way_to_name_the_models(tmp_path):
    with pytest.raises(ConfigError, match="no model to serve"):
        model_configs(parser().parse_args([]))
    with pytest.raises(ConfigError, match="not both"):
        model_configs(parser().parse_args(["--model_base_path=/m", f"--model_config_file={tmp_path}/x"]))
    assert model_configs(parser().parse_args(["--model_name=m", "--model_base_path=/m"])) == [
        ModelConfig("m", "/m")
    ]


def test_bad_flags_exit_2_in_one_line(tmp_path, capsys):
    assert main(["--model_config_file", str(tmp_path / "missing.config")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the ModelServerConfig" in err
    with pytest.raises(SystemExit) as exited:
        main(["--enable_batching=maybe", "--model_base_path=/m"])
    assert exited.value.code == 2

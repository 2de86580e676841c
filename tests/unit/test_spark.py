"""How many executors a cluster master is expected to bring up, read from its configuration."""

from __future__ import annotations

import pytest
from pyspark import SparkConf

from fjord.spark import _expected_executors, _seconds


def conf(**values: str) -> SparkConf:
    spark_conf = SparkConf(loadDefaults=False)
    for name, value in values.items():
        spark_conf.set(name.replace("_", "."), value)
    return spark_conf


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"spark_master": "local-cluster[3,1,1024]"}, 3),
        ({"spark_master": "yarn"}, 2),  # YARN's default
        ({"spark_master": "yarn", "spark_executor_instances": "5"}, 5),
        ({"spark_master": "k8s://https://api:6443", "spark_executor_instances": "4"}, 4),
        ({"spark_master": "spark://host:7077", "spark_cores_max": "8", "spark_executor_cores": "2"}, 4),
        ({"spark_master": "spark://host:7077"}, None),  # unknown: wait until the count holds
        ({"spark_master": "yarn", "spark_dynamicAllocation_enabled": "true"}, None),
    ],
)
def test_expected_executors(settings: dict[str, str], expected: int | None) -> None:
    assert _expected_executors(conf(**settings)) == expected


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2min", 120), ("500ms", 0.5), ("1500", 1.5)])
def test_spark_durations(text: str, seconds: float) -> None:
    assert _seconds(text) == seconds

"""The canary split's pieces that need no server: the sticky bucket, the routing file, the key of a
request, and the canary rule's verdict on figures (the server and the rule on real traffic:
tests/integration/test_canary_shadow.py)."""

from __future__ import annotations

import json

import pytest

from fjord.errors import ConfigError
from jobs.serve.canary import CanarySpec, Figures, verdict
from jobs.serve.routing import Split, bucket, key_of, read_splits, write_splits


def test_a_keys_bucket_is_fixed_and_the_buckets_spread_evenly():
    assert bucket("card-7") == bucket("card-7") and 0 <= bucket("card-7") < 100
    assert bucket(7) == bucket("7")  # a key sent as a number or as text lands in one place
    shares = [bucket(f"card-{i}") < 10 for i in range(20_000)]
    assert 0.09 < sum(shares) / len(shares) < 0.11


def test_the_routing_file_round_trips_and_a_bad_one_is_one_line(tmp_path):
    path = tmp_path / "routing.json"
    assert read_splits(path) == {}
    write_splits(path, {"fraud": Split(12.5, "card_id")})
    assert read_splits(path) == {"fraud": Split(12.5, "card_id")}
    for doc, message in (
        ([1], "an object of serving -> split"),
        ({"fraud": {"canary_percent": 101}}, "canary_percent must be a number from 0 to 100"),
        ({"fraud": {"canary_percent": True}}, "canary_percent must be a number from 0 to 100"),
        ({"fraud": {"canary_percent": 5, "canary_key": 3}}, "canary_key must be a field name"),
    ):
        path.write_text(json.dumps(doc))
        with pytest.raises(ConfigError, match=message):
            read_splits(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a routing file"):
        read_splits(path)


def test_the_key_of_a_request_is_its_first_rows():
    assert key_of({"instances": [{"card_id": "c1"}, {"card_id": "c2"}]}, "card_id") == "c1"
    assert key_of({"inputs": {"card_id": ["c3", "c4"]}}, "card_id") == "c3"
    assert key_of({"inputs": {"card_id": "c5"}}, "card_id") == "c5"
    assert key_of({"instances": [[1, 2]]}, "card_id") is None
    assert key_of({"instances": [{"x": 1}]}, "card_id") is None
    assert key_of([], "card_id") is None


def test_the_canary_rule_waits_then_promotes_or_rolls_back_with_its_reasons():
    spec = CanarySpec(project="p", min_requests=100)
    stable = Figures(1, requests=1_000, errors=1, p99_ms=8.0, estimated_roc_auc=0.90)
    assert verdict(Figures(2, requests=99), stable, spec)[0] == "wait"
    good = Figures(2, requests=200, errors=0, p99_ms=9.0, estimated_roc_auc=0.91)
    assert verdict(good, stable, spec) == ("promote", [])
    erring = Figures(2, requests=200, errors=10, p99_ms=9.0, estimated_roc_auc=0.91)
    decision, reasons = verdict(erring, stable, spec)
    assert decision == "rollback" and reasons == [
        "error rate 5.00% against stable's 0.10% (at most 1.00% more)"
    ]
    slow = Figures(2, requests=200, p99_ms=20.0, estimated_roc_auc=0.91)
    assert verdict(slow, stable, spec)[1] == ["p99 latency 20.00 ms against stable's 8.00 ms (at most 1.5x)"]
    fast_enough = Figures(2, requests=200, p99_ms=4.0, estimated_roc_auc=0.91)  # under min_p99_ms: never slow
    assert (
        verdict(fast_enough, Figures(1, requests=1_000, p99_ms=1.0, estimated_roc_auc=0.9), spec)[0]
        == "promote"
    )
    worse = Figures(2, requests=200, p99_ms=8.0, estimated_roc_auc=0.85)
    assert verdict(worse, stable, spec)[1] == ["estimated ROC AUC 0.8500 against stable's 0.9000"]
    labelled = Figures(2, requests=200, p99_ms=8.0, realized_roc_auc=0.80, labelled=300)
    judged = Figures(1, requests=1_000, p99_ms=8.0, realized_roc_auc=0.90, labelled=300)
    assert verdict(labelled, judged, spec)[1] == [
        "realized ROC AUC 0.8000 on 300 labelled rows against stable's 0.9000"
    ]
    few = Figures(2, requests=200, p99_ms=8.0, realized_roc_auc=0.80, labelled=50)  # too few labels: no rule
    assert verdict(few, judged, spec)[0] == "promote"


def test_a_deploy_is_a_canary_or_a_shadow_and_a_split_is_a_share():
    from pydantic import ValidationError

    from jobs.serve.deploy import DeploySpec

    with pytest.raises(ValidationError, match="the canary or as the shadow, not both"):
        DeploySpec(project="p", canary=True, shadow=True)
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        DeploySpec(project="p", canary=True, canary_percent=101)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        CanarySpec(project="p", min_requests=0)

"""Passthrough fields: taken out of a request before anything reads it, one value per row; bad ones a 400."""

import numpy as np
import pytest

from fjord.errors import ConfigError
from jobs.serve.errors import ServingError
from jobs.serve.passthrough import Passthrough, parse_flags

KEYS = Passthrough({"fraud": ("tid", "order")})


def test_row_format_fields_are_removed_and_kept_per_row_with_null_for_a_row_without():
    doc = {"instances": [{"amount": 1.0, "tid": "t-1"}, {"amount": 2.0}, {"amount": 3.0, "tid": 7}]}
    assert KEYS.take("fraud", doc) == {"tid": ["t-1", None, 7]}
    assert doc == {"instances": [{"amount": 1.0}, {"amount": 2.0}, {"amount": 3.0}]}


def test_columnar_fields_are_removed_and_a_scalar_is_one_row():
    doc = {"inputs": {"amount": [1.0, 2.0], "tid": ["a", "b"], "order": 5}}
    assert KEYS.take("fraud", doc) == {"tid": ["a", "b"], "order": [5]}
    assert doc == {"inputs": {"amount": [1.0, 2.0]}}


def test_another_model_or_a_request_without_the_fields_is_untouched():
    doc = {"instances": [{"amount": 1.0, "tid": "t-1"}]}
    assert KEYS.take("other", doc) is None
    assert KEYS.take("fraud", {"instances": [{"amount": 1.0}]}) is None
    assert KEYS.take("fraud", {"instances": [1.0, 2.0]}) is None  # no names: nothing to take
    assert doc["instances"][0]["tid"] == "t-1"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"a": 1}, "an object"),
        ([1, 2], "a list"),
        ("x" * 257, "a text of 257 characters"),
    ],
)
def test_a_value_that_is_not_a_short_scalar_is_a_400(value, why):
    with pytest.raises(ServingError, match=f"passthrough field tid: {why}") as caught:
        KEYS.take("fraud", {"instances": [{"amount": 1.0, "tid": value}]})
    assert caught.value.code.http == 400


def test_grpc_tensors_are_taken_and_text_decoded():
    tensors = {"amount": "proto-a", "tid": "proto-t"}
    decoded = {"proto-t": np.array([b"t-1", b"t-2"], dtype=object)}
    assert KEYS.take_tensors("fraud", tensors, lambda _name, proto: decoded[proto]) == {"tid": ["t-1", "t-2"]}
    assert tensors == {"amount": "proto-a"}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["fraud"], "expected MODEL=field"),
        (["fraud=tid", "fraud=x"], "model fraud is given twice"),
        (["fraud=t id"], "is not a field name"),
        (["fraud=tid,tid"], "a field is named twice"),
    ],
)
def test_bad_flags_are_one_line_config_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse_flags(flags)


def test_flags_parse_per_model():
    assert parse_flags(["fraud=tid,order", "churn=customer"]) == {
        "fraud": ("tid", "order"),
        "churn": ("customer",),
    }

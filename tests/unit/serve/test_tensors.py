"""TF Serving's JSON tensor format, byte for byte (the expected strings are what TF Serving's
RapidJSON PrettyWriter writes, as in tensorflow_serving/util/json_tensor_test.cc)."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.serve.errors import Code, ServingError
from jobs.serve.tensors import (
    COLUMNAR,
    ROW,
    TensorSpec,
    error_response,
    format_float,
    parse_body,
    predict_inputs,
    predict_response,
    results_response,
    to_array,
)

XY = {"x": TensorSpec("float", (-1,)), "y": TensorSpec("float", (-1,))}
ONE = {"x": TensorSpec("float", (-1,))}


def test_half_plus_two_answers_as_tf_serving_does():
    outputs = {"y": np.array([2.5, 3.0, 4.5], dtype=np.float32)}
    assert predict_response(outputs, ROW) == '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    assert predict_response(outputs, COLUMNAR) == (
        '{\n    "outputs": [\n        2.5,\n        3.0,\n        4.5\n    ]\n}'
    )


def test_named_outputs_are_objects_per_row():
    outputs = {"b": np.array([[1, 2]], dtype=np.int64), "a": np.array([0.5], dtype=np.float32)}
    assert predict_response(outputs, ROW) == (
        '{\n    "predictions": [\n        {\n            "a": 0.5,\n'
        '            "b": [1, 2]\n        }\n    ]\n}'
    )
    assert predict_response(outputs, COLUMNAR) == (
        '{\n    "outputs": {\n        "a": [\n            0.5\n        ],\n        "b": [\n            [\n'
        "                1,\n                2\n            ]\n        ]\n    }\n}"
    )


def test_bytes_outputs_are_base64_objects():
    array = np.empty(1, dtype=object)
    array[:] = [b"hi"]
    assert '{"b64": "aGk="}' in predict_response({"same_bytes": array}, ROW).replace("\n", "").replace(
        "    ", ""
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.2, "0.2"),
        (1.0, "1.0"),
        (9000000.0, "9e+06"),
        (3e-05, "3e-05"),
        (0.123456789, "0.123456791"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
    ],
)
def test_floats_print_as_tf_serving_prints_them(value, text):
    assert format_float(float(np.float32(value))) == text


def test_errors_and_results_bodies():
    assert error_response('bad "x"') == '{\n    "error": "bad \\"x\\""\n}'
    assert results_response([0.5, 1.0], classify=False) == '{\n    "results": [0.5, 1.0]\n}'
    assert results_response([[("a", 0.25)]], classify=True) == (
        '{\n    "results": [[["a", 0.25]]\n    ]\n}'  # the single-line format is set before each row
    )


def test_row_and_columnar_requests_become_named_arrays():
    arrays, fmt = predict_inputs(parse_body(b'{"instances": [{"x": 1, "y": 2.5}, {"x": 3, "y": 4}]}'), XY)
    assert fmt == ROW and arrays["x"].dtype == np.float32 and arrays["y"].tolist() == [2.5, 4.0]
    arrays, fmt = predict_inputs(parse_body(b'{"inputs": {"x": [1, NaN], "y": [Infinity, 0]}}'), XY)
    assert fmt == COLUMNAR and np.isnan(arrays["x"][1]) and np.isinf(arrays["y"][0])
    arrays, _ = predict_inputs(parse_body(b'{"instances": [1, 2, 3]}'), ONE)
    assert arrays["x"].shape == (3,)


def test_base64_strings():
    assert to_array([{"b64": "aGVsbG8="}, "plain"], "string").tolist() == [b"hello", b"plain"]
    with pytest.raises(ServingError, match="Unable to base64 decode"):
        to_array([{"b64": "!!!not base64"}], "string")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "The document is empty"),
        (b"{not json", "JSON Parse error"),
        (b"[1, 2]", "Is not object"),
        (b'{"instances": [1], "inputs": [1]}', "expecting only one of 'inputs' or 'instances'"),
        (b'{"signature_name": 3, "instances": [1]}', "'signature_name' key must be a string"),
        (b'{"x": 1}', "Missing 'inputs' or 'instances' key"),
        (b'{"instances": []}', "No values in 'instances' array"),
        (b'{"instances": 5}', "to be an list/array"),
        (b'{"instances": [1]}', "instances is a plain list, but expecting list of objects"),
        (b'{"instances": [{"x": 1}]}', "keys must be equal to: x,y"),
        (b'{"instances": [{"x": 1, "y": 1, "z": 1}]}', "does not have named input: z"),
        (b'{"instances": [{"x": true, "y": 1}]}', "Type: True is not of expected type: float"),
        (b'{"instances": [{"x": "a", "y": 1}]}', "Type: String is not of expected type: float"),
        (b'{"instances": [{"x": 16777217, "y": 1}]}', "to float without loss of precision"),
        (b'{"instances": [{"x": [1, 2], "y": 1}, {"x": [1], "y": 1}]}', "Expecting shape [2] but got: [1]"),
        (b'{"inputs": {"x": [[1, 2], [3]], "y": [1]}}', "Encountered list at unexpected size"),
        (b'{"inputs": {"x": [1]}}', "Missing named input: y in 'inputs' object."),
    ],
)
def test_bad_requests_are_invalid_arguments(body, message):
    with pytest.raises(ServingError) as caught:
        from jobs.serve.tensors import signature_name

        doc = parse_body(body)
        signature_name(doc)
        predict_inputs(doc, XY)
    assert caught.value.code is Code.INVALID_ARGUMENT and caught.value.code.http == 400
    assert message in caught.value.message

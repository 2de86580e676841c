"""TF Serving's JSON tensor format: requests to NumPy arrays, arrays to responses, byte for byte.

This follows ``tensorflow_serving/util/json_tensor.cc``: the row format (``instances`` ->
``predictions``) and the columnar format (``inputs`` -> ``outputs``), ``{"b64": ...}`` for binary
strings, ``NaN``/``Infinity`` tokens, the same type and shape checks with the same messages, and the
output RapidJSON's ``PrettyWriter`` writes (floats printed as TF Serving prints them: six significant
digits unless that does not round-trip, a trailing ``.0`` on whole numbers).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from jobs.serve.errors import Code, ServingError, invalid

ROW, COLUMNAR = "row", "columnar"

# TensorFlow dtype names (DataTypeString) -> NumPy dtypes.
DTYPES: dict[str, Any] = {
    "float": np.float32,
    "double": np.float64,
    "half": np.float16,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": np.object_,
}
_INT_RANGES = {
    "int8": (-(2**31), 2**31 - 1),  # TF Serving reads the narrow ints as JSON int32 (IsInt)
    "int16": (-(2**31), 2**31 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint8": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
_FLOAT_DIGITS = {"float": 24, "half": 24, "double": 53}
_FLOAT_MAX = {"float": float(np.finfo(np.float32).max), "half": float(np.finfo(np.float32).max)}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: its TensorFlow dtype name and shape (-1: any size)."""

    dtype: str
    shape: tuple[int, ...] | None  # None: unknown rank


# -- parsing ------------------------------------------------------------------------------------------


def parse_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; NaN and Infinity tokens are accepted, as RapidJSON does."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # orjson refuses NaN/Infinity tokens (and integers past 64 bits); the stdlib takes both
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise invalid(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_short(doc)} Is not object")
    return doc


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise invalid(f"JSON Value: {_short(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Unable to base64 decode") from None


def _type_error(value: Any, dtype: str) -> Exception:
    return invalid(f"JSON Value: {_short(value)} Type: {_json_type(value)} is not of expected type: {dtype}")


def _leaf(value: Any, dtype: str) -> Any:
    """One JSON value as an element of a ``dtype`` tensor (AddValueToTensor)."""
    if dtype == "string":
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, dict):
            return _b64(value)
        raise _type_error(value, dtype)
    if dtype == "bool":
        if isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(value, dtype)
    if dtype in _FLOAT_DIGITS:
        if math.isfinite(value):
            if isinstance(value, int):
                if abs(value) > (1 << _FLOAT_DIGITS[dtype]) - 1:
                    raise invalid(f"Cannot convert JSON value: {value} to {dtype} without loss of precision.")
            elif dtype in _FLOAT_MAX and abs(value) > _FLOAT_MAX[dtype]:
                raise invalid(f"Cannot convert JSON value: {value} to {dtype} without loss of precision.")
        return value
    low, high = _INT_RANGES[dtype]
    if isinstance(value, float) or not low <= value <= high:
        raise _type_error(value, dtype)
    return value


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _floats(value: Any, dtype: str) -> np.ndarray | None:
    """The common case at once: a flat list of JSON floats for a float tensor (checked as the slow
    path checks them); None for anything else."""
    if dtype not in _FLOAT_DIGITS or not isinstance(value, list) or not value:
        return None
    if not all(type(v) is float for v in value):  # ints need the precision check, bools are refused
        return None
    array = np.asarray(value, dtype=np.float64)
    limit = _FLOAT_MAX.get(dtype)
    if limit is not None and np.any(np.abs(array[np.isfinite(array)]) > limit):
        return None  # let the slow path name the value
    return array.astype(DTYPES[dtype], copy=False)


def to_array(value: Any, dtype: str) -> np.ndarray:
    """A dense tensor from nested JSON lists (FillTensorProto): every leaf at the same depth, every
    list at a level of the same length as the first."""
    if dtype not in DTYPES:
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value to type: {dtype}")
    fast = _floats(value, dtype)
    if fast is not None:
        return fast
    shape = _shape_of(value)
    rank = len(shape)
    flat: list[Any] = []

    def fill(node: Any, level: int) -> None:
        if not isinstance(node, list):
            if level != rank:
                raise invalid(
                    f"JSON Value: {_short(node)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {rank}"
                )
            flat.append(_leaf(node, dtype))
            return
        if level >= rank:
            raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
        if len(node) != shape[level]:
            raise invalid(
                f"Encountered list at unexpected size: {len(node)} at level: {level} "
                f"expected size: {shape[level]}"
            )
        for item in node:
            fill(item, level + 1)

    fill(value, 0)
    if dtype == "string":
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.asarray(flat, dtype=DTYPES[dtype]).reshape(shape)


def _signature_error(doc: dict[str, Any]) -> Exception:
    return invalid(
        f"JSON Value: {_short(doc)} not formatted correctly. 'signature_name' key must be a string value."
    )


def signature_name(doc: dict[str, Any]) -> str:
    """The request's ``signature_name`` ('' when absent: the default signature)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise _signature_error(doc)
    return name


def predict_inputs(doc: dict[str, Any], specs: Mapping[str, TensorSpec]) -> tuple[dict[str, np.ndarray], str]:
    """The named input arrays of a predict request, and its format (row or columnar)."""
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid(
            f"JSON Value: {_short(doc)} Not formatted correctly expecting only one of 'inputs' or "
            "'instances' keys to exist "
        )
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {_short(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {_short(doc)} No values in 'instances' array")
        return _from_instances(instances, specs), ROW
    if has_inputs:
        return _from_inputs(doc["inputs"], specs), COLUMNAR
    raise invalid("Missing 'inputs' or 'instances' key")


def _is_element_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _from_instances(instances: list[Any], specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances[0], dict) and len(specs) > 1:
        raise invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    objects = _is_element_object(instances[0])
    names = sorted(specs)
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if objects:
            if not _is_element_object(item):
                raise invalid(f"Expecting object but got list at item {index} of input list")
            for key in item:
                if key not in specs:
                    raise invalid(
                        f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                        f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                    )
            if set(item) != set(names):
                raise invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_short(item)} keys must be equal to: {','.join(names)}"
                )
            for name in names:
                columns[name].append(item[name])
        else:
            if _is_element_object(item):
                raise invalid(f"Expecting value/list but got object at item {index} of input list")
            columns[names[0]].append(item)
    arrays = {}
    for name, values in columns.items():
        if not values:
            continue
        first = _shape_of(values[0])
        for index, value in enumerate(values):
            if _shape_of(value) != first:
                raise invalid(
                    f"Failed to process element: {index} of 'instances' list. Error: INVALID_ARGUMENT: "
                    f"Expecting shape [{','.join(map(str, first))}] but got: "
                    f"[{','.join(map(str, _shape_of(value)))}]"
                )
        arrays[name] = to_array(values, specs[name].dtype)
    return arrays


def _from_inputs(value: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(value, dict) or _is_b64(value):
        if len(specs) > 1:
            raise invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        name = next(iter(specs))
        return {name: to_array(value, specs[name].dtype)}
    arrays = {}
    for name in sorted(specs):
        if name not in value:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = to_array(value[name], specs[name].dtype)
    return arrays


# -- writing ------------------------------------------------------------------------------------------


def format_float(value: float, dtype: Any = np.float32) -> str:
    """A float as TF Serving writes it (WriteDecimal)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if dtype(text) != dtype(value):
        text = f"{value:.{9 if dtype is np.float32 else 17}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


class PrettyWriter:
    """RapidJSON's ``PrettyWriter`` (4-space indent, ``kFormatSingleLineArray``), so responses match
    TF Serving's to the byte."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.levels: list[list[Any]] = []  # [in_array, value_count]
        self.single_line = False

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1] > 0:
                self.out.append(", " if self.single_line else ",")
            if not self.single_line:
                self.out.append("\n" + "    " * len(self.levels))
        else:
            if level[1] > 0:
                self.out.append(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self.out.append("\n")
            if level[1] % 2 == 0:
                self.out.append("    " * len(self.levels))
        level[1] += 1

    def raw(self, text: str) -> None:
        self._prefix()
        self.out.append(text)

    def string(self, text: str) -> None:
        self.raw(json.dumps(text, ensure_ascii=False))

    def start_object(self) -> None:
        self.raw("{")
        self.levels.append([False, 0])

    def end_object(self) -> None:
        if self.levels.pop()[1]:
            self.out.append("\n" + "    " * len(self.levels))
        self.out.append("}")

    def start_array(self) -> None:
        self.raw("[")
        self.levels.append([True, 0])

    def end_array(self) -> None:
        if self.levels.pop()[1] and not self.single_line:
            self.out.append("\n" + "    " * len(self.levels))
        self.out.append("]")

    def text(self) -> str:
        return "".join(self.out)


def _scalar(writer: PrettyWriter, value: Any, as_bytes: bool) -> None:
    if isinstance(value, np.floating):
        writer.raw(format_float(float(value), np.float64 if value.dtype == np.float64 else np.float32))
    elif isinstance(value, np.bool_ | bool):
        writer.raw("true" if value else "false")
    elif isinstance(value, np.integer | int):
        writer.raw(str(int(value)))
    elif isinstance(value, bytes):
        if as_bytes:
            writer.start_object()
            writer.string("b64")
            writer.string(base64.b64encode(value).decode())
            writer.end_object()
        else:
            writer.string(value.decode(errors="replace"))
    else:
        writer.string(str(value))


def _values(writer: PrettyWriter, array: Any, as_bytes: bool) -> None:
    if not isinstance(array, np.ndarray) or array.ndim == 0:
        _scalar(writer, array[()] if isinstance(array, np.ndarray) else array, as_bytes)
        return
    writer.start_array()
    for item in array:
        if isinstance(item, np.ndarray):
            _values(writer, item, as_bytes)
        else:
            _scalar(writer, item, as_bytes)
    writer.end_array()


def _is_bytes(name: str, array: np.ndarray) -> bool:
    return array.dtype == object and name.endswith("_bytes")


def predict_response(outputs: Mapping[str, np.ndarray], fmt: str) -> str:
    """The JSON body of a predict response (MakeJsonFromTensors)."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    writer = PrettyWriter()
    writer.start_object()
    objects = len(names) > 1
    if fmt == COLUMNAR:
        writer.string("outputs")
        if objects:
            writer.start_object()
        for name in names:
            if objects:
                writer.string(name)
            _values(writer, outputs[name], _is_bytes(name, outputs[name]))
        if objects:
            writer.end_object()
        writer.end_object()
        return writer.text()
    batch = None
    for name in names:
        if outputs[name].ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if batch is not None and outputs[name].shape[0] != batch:
            raise invalid(
                f"Tensor name: {name} has inconsistent batch size: {outputs[name].shape[0]} "
                f"expecting: {batch}"
            )
        batch = outputs[name].shape[0]
    writer.string("predictions")
    writer.start_array()
    for row in range(batch or 0):
        if objects:
            writer.start_object()
        writer.single_line = True
        for name in names:
            if objects:
                writer.string(name)
            _values(writer, outputs[name][row], _is_bytes(name, outputs[name]))
        writer.single_line = False
        if objects:
            writer.end_object()
    writer.end_array()
    writer.end_object()
    return writer.text()


def error_response(message: str) -> str:
    """``{"error": ...}`` as TF Serving writes it (MakeJsonFromStatus)."""
    writer = PrettyWriter()
    writer.start_object()
    writer.string("error")
    writer.string(message)
    writer.end_object()
    return writer.text()


def results_response(results: list[Any], classify: bool) -> str:
    """``{"results": ...}`` of :classify (``[[label, score], ...]`` per example) or :regress."""
    if not results:
        raise invalid(f"Cannot convert empty {'Classification' if classify else 'Regression'}Results to JSON")
    writer = PrettyWriter()
    writer.start_object()
    writer.string("results")
    if classify:
        writer.start_array()
        for classes in results:
            writer.single_line = True
            writer.start_array()
            for label, score in classes:
                writer.start_array()
                writer.string(label)
                writer.raw(format_float(float(score)))
                writer.end_array()
            writer.end_array()
            writer.single_line = False
        writer.end_array()
    else:
        writer.single_line = True
        writer.start_array()
        for value in results:
            writer.raw(format_float(float(value)))
        writer.end_array()
    writer.end_object()
    return writer.text()

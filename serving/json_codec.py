"""TF Serving's REST JSON: request bodies -> input arrays, outputs -> response bodies, errors -> `{"error": ...}`.

Follows `tensorflow_serving/util/json_tensor.cc`:

- Row format: `{"signature_name": ..., "instances": [...]}`. Each instance is an
  object with one key per input (or a bare value when the signature has one
  input); instances are stacked along a new dimension 0. Answered as
  `{"predictions": [...]}`: one object per row, or bare values for one output.
- Columnar format: `{"inputs": {name: value, ...}}` (or a bare value for one
  input), each value a whole tensor. Answered as `{"outputs": {...}}` (or a
  bare value for one output).
- Strings are JSON strings (UTF-8) or `{"b64": "..."}`; outputs whose name ends
  in `_bytes` are written as `{"b64": ...}`. NaN and infinities are read and
  written as `NaN`, `Infinity`, `-Infinity`, as TF Serving does.

Every problem is a `RequestError` with INVALID_ARGUMENT (UNIMPLEMENTED for a
dtype JSON cannot carry). Unlike TF Serving, an `inputs` object with names the
signature does not have is rejected rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping

import grpc
import numpy as np
import tensorflow as tf

from serving.tensor_codec import MAX_MESSAGE_CHARS, RequestError

ROW, COLUMNAR = "row", "columnar"
BYTES_SUFFIX = "_bytes"


def _bad(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _debug(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:200] + "..."


def parse_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (NaN / Infinity accepted).

    Raises:
      RequestError: INVALID_ARGUMENT for an empty body, invalid JSON or UTF-8, or a non-object.
    """
    if not body:
        raise _bad("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _bad(f"JSON Parse error: invalid UTF-8 at offset: {e.start}") from None
    except json.JSONDecodeError as e:
        raise _bad(f"JSON Parse error: {e.msg} at offset: {e.pos}") from None
    if not isinstance(doc, dict):
        raise _bad(f"JSON Value: {_debug(doc)} Is not object")
    return doc


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional `signature_name` of a request ("" means serving_default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise _bad(f"JSON Value: {_debug(dict(doc))} not formatted correctly. 'signature_name' key must be a "
                   "string value.")
    return name


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _scalar(value: Any, dtype: tf.DType) -> Any:
    """One JSON leaf converted for `dtype` (TF Serving's AddValueToTensor rules)."""
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_b64(value) and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError):
                raise _bad("Unable to base64 decode") from None
        if isinstance(value, dict):
            raise _bad(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    elif dtype.is_floating:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif dtype.is_integer:
        if isinstance(value, int) and not isinstance(value, bool) and dtype.min <= value <= dtype.max:
            return value
    else:
        raise RequestError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON Value: {_debug(value)} to type: {dtype.name}")
    kind = {bool: "Bool", int: "Number", float: "Number", str: "String", dict: "Object", list: "Array"}
    raise _bad(f"JSON Value: {_debug(value)} Type: {kind.get(type(value), 'Null')} is not of expected type: "
               f"{dtype.name}")


def _shape(value: Any) -> list[int]:
    """The dense shape a nested list implies, following first elements (as TF Serving does)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], level: int, dtype: tf.DType, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise _bad(f"JSON Value: {_debug(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                       f"Expected at level: {len(shape)}")
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise _bad(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise _bad(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                   f"{shape[level]}")
    for v in value:
        _flatten(v, shape, level + 1, dtype, out)


def _tensor(value: Any, dtype: tf.DType) -> tuple[list[int], list]:
    shape = _shape(value)
    flat: list = []
    _flatten(value, shape, 0, dtype, flat)
    return shape, flat


def _array(shape: list[int], flat: list, dtype: tf.DType) -> np.ndarray:
    np_dtype = object if dtype == tf.string else dtype.as_numpy_dtype
    array = np.empty(len(flat), dtype=np_dtype)
    array[:] = flat
    return array.reshape(shape)


def _from_instances(instances: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise _bad("Expecting 'instances' to be an list/array")
    if not instances:
        raise _bad("No values in 'instances' array")
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not objects and len(specs) > 1:
        raise _bad("instances is a plain list, but expecting list of objects as multiple input tensors required "
                   "as per tensorinfo_map")
    names = sorted(specs)
    shapes: dict[str, list[int]] = {}
    flats: dict[str, list] = {n: [] for n in names}
    for i, elem in enumerate(instances):
        is_object = isinstance(elem, dict) and not _is_b64(elem)
        if objects != is_object:
            raise _bad(f"Expecting {'object' if objects else 'value/list'} but got "
                       f"{'object' if is_object else 'list'} at item {i} of input list")
        items = elem.items() if objects else [(names[0], elem)]
        for name, value in items:
            if name not in specs:
                raise _bad(f"Failed to process element: {i} key: {name} of 'instances' list. Error: "
                           f"JSON object: does not have named input: {name}")
            try:
                shape, flat = _tensor(value, specs[name].dtype)
            except RequestError as e:
                raise RequestError(e.code, f"Failed to process element: {i} of 'instances' list. Error: "
                                           f"{e.message}") from None
            if name in shapes and shapes[name] != shape:
                raise _bad(f"Failed to process element: {i} key: {name} of 'instances' list. Error: Expecting "
                           f"shape {shapes[name]} but got: {shape}")
            shapes[name] = shape
            flats[name].extend(flat)
        if objects and set(elem) != set(names):
            raise _bad(f"Failed to process element: {i} of 'instances' list. JSON object: {_debug(elem)} keys "
                       f"must be equal to: {','.join(names)}")
    return {n: _array([len(instances), *shapes[n]], flats[n], specs[n].dtype) for n in names}


def _from_inputs(inputs: Any, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(specs) > 1:
            raise _bad("inputs is a plain value/list, but expecting an object as multiple input tensors required "
                       "as per tensorinfo_map")
        [(name, spec)] = specs.items()
        return {name: _array(*_tensor(inputs, spec.dtype), spec.dtype)}
    extra = sorted(set(inputs) - set(specs))
    if extra:
        raise _bad(f"unexpected input(s) in 'inputs' object: {', '.join(extra)} (expected: {', '.join(sorted(specs))})")
    arrays = {}
    for name, spec in specs.items():
        if name not in inputs:
            raise _bad(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _array(*_tensor(inputs[name], spec.dtype), spec.dtype)
    return arrays


def inputs_from_json(doc: Mapping[str, Any], specs: Mapping[str, tf.TensorSpec]) -> tuple[str, dict[str, np.ndarray]]:
    """(format, input arrays) of a predict request body, typed by the signature's input specs.

    Raises:
      RequestError: INVALID_ARGUMENT: both or neither of `instances` / `inputs`, and every
        TF Serving formatting error (ragged lists, wrong JSON types, unknown or missing names).
    """
    if "instances" in doc and "inputs" in doc:
        raise _bad("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in doc:
        return ROW, _from_instances(doc["instances"], specs)
    if "inputs" in doc:
        return COLUMNAR, _from_inputs(doc["inputs"], specs)
    raise _bad("Missing 'inputs' or 'instances' key")


def _json_value(name: str, value: np.ndarray) -> Any:
    if value.dtype == object or value.dtype.kind in "SU":
        if name.endswith(BYTES_SUFFIX):
            encode = np.frompyfunc(lambda b: {"b64": base64.b64encode(bytes(b)).decode("ascii")}, 1, 1)
        else:
            encode = np.frompyfunc(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b), 1, 1)
        return encode(value).tolist() if value.ndim else encode(value)
    return value.tolist()


def outputs_to_json(outputs: Mapping[str, np.ndarray], fmt: str) -> bytes:
    """The response body for outputs of a request in format `fmt` (`row` or `columnar`).

    Raises:
      RequestError: INVALID_ARGUMENT for no outputs, or (row format) outputs without a batch
        dimension or with different batch sizes.
    """
    if not outputs:
        raise _bad("Cannot convert empty tensor map to JSON")
    if fmt == COLUMNAR:
        values = {n: _json_value(n, v) for n, v in outputs.items()}
        body: Any = {"outputs": values if len(values) > 1 else next(iter(values.values()))}
    else:
        batch = None
        for name, value in outputs.items():
            if value.ndim == 0:
                raise _bad(f"Tensor name: {name} has no shape information ")
            if batch is not None and value.shape[0] != batch:
                raise _bad(f"Tensor name: {name} has inconsistent batch size: {value.shape[0]} expecting: {batch}")
            batch = value.shape[0]
        values = {n: _json_value(n, v) for n, v in outputs.items()}
        if len(values) == 1:
            rows = next(iter(values.values()))
        else:
            rows = [{n: values[n][i] for n in values} for i in range(batch or 0)]
        body = {"predictions": rows}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def error_json(message: str) -> bytes:
    """TF Serving's error body: `{"error": "<message>"}`."""
    return json.dumps({"error": message[:MAX_MESSAGE_CHARS]}).encode("utf-8")

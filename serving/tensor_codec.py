"""PredictRequest handling: TensorProto <-> tensors, request validation, TF Serving's gRPC status codes.

Errors use TF Serving's codes: INVALID_ARGUMENT for a bad request (signature,
input names, dtypes, shapes, malformed tensors, output filter) or an
InvalidArgument error raised in the graph; `graph_error` maps the other graph
errors; anything unexpected is INTERNAL (see `serving.services`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

DEFAULT_SIGNATURE = "serving_default"
MAX_MESSAGE_CHARS = 2000  # error details longer than this are cut


class RequestError(Exception):
    """A request failure carrying the gRPC status code it is reported with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message[:MAX_MESSAGE_CHARS]


@dataclass(frozen=True)
class Signature:
    """One serving signature: the concrete function, its named input specs and its output names.

    `batch_dim_open` (derived): every input has a known rank >= 1 and leaves dimension 0 open, so
    requests may be concatenated along it (see `serving.predictor`).
    """

    fn: Callable[..., Any]
    inputs: dict[str, tf.TensorSpec]
    outputs: tuple[str, ...]
    batch_dim_open: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        dims = [_spec_dims(spec) for spec in self.inputs.values()]
        object.__setattr__(self, "batch_dim_open", bool(dims) and all(d and d[0] is None for d in dims))


class SignatureOwner(Protocol):
    """What a request runs against: a named, versioned set of signatures (a loaded model version)."""

    name: str
    version: int
    signatures: Mapping[str, Signature]


@functools.lru_cache(maxsize=1024)
def _spec_dims(spec: tf.TensorSpec) -> Optional[tuple[Optional[int], ...]]:
    """A spec's dimensions (None: any size), or None for an unknown rank; computed once per spec."""
    return None if spec.shape.rank is None else tuple(spec.shape.as_list())


def check_shape(name: str, dims: Sequence[int], spec: tf.TensorSpec, max_elements: int) -> None:
    """Checks an input's shape against its TensorSpec and the element bound (both APIs).

    Raises:
      RequestError: INVALID_ARGUMENT naming the input: a negative dimension, more than
        `max_elements` elements, or a shape the spec does not accept.
    """
    dims = list(dims)
    elements = 1
    for d in dims:
        if d < 0:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' has a negative dimension: {dims}")
        elements *= d
    if elements > max_elements:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' has shape {dims}: more than {max_elements} elements")
    want = _spec_dims(spec)
    if want is not None and (len(want) != len(dims) or any(w is not None and w != d for w, d in zip(want, dims))):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' has shape {dims} but the signature expects "
                           f"{_shape_str(spec.shape)} (rank {spec.shape.rank})")


def tensor_from_proto(name: str, proto: Any, spec: tf.TensorSpec, max_elements: int) -> np.ndarray:
    """Validates one input TensorProto against its TensorSpec and converts it to an array.

    Raises:
      RequestError: INVALID_ARGUMENT naming the input: wrong dtype, unknown or
        negative shape, more than `max_elements` elements, a shape the spec
        does not accept, or values that do not fill the shape.
    """
    want = spec.dtype
    if proto.dtype != want.as_datatype_enum:
        try:
            got = tf.dtypes.as_dtype(proto.dtype).name
        except TypeError:
            got = f"unknown dtype {proto.dtype}"
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' has dtype {got} but the signature expects {want.name}")
    if proto.tensor_shape.unknown_rank:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"input '{name}' has an unknown shape")
    dims = [d.size for d in proto.tensor_shape.dim]
    check_shape(name, dims, spec, max_elements)
    try:
        value = _decode_exact(proto, dims)
        if value is None:
            value = tf.make_ndarray(proto)
    except Exception as e:  # ValueError / TypeError from values that do not fill the shape, etc.
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' is a malformed TensorProto: {e}") from e
    if list(value.shape) != dims:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input '{name}' is a malformed TensorProto: values do not fill shape {dims}")
    return value


# dtype -> (array dtype, repeated field): decoded here when the values fill the shape exactly.
_DECODE = {types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val"),
           types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
           types_pb2.DT_INT32: (np.dtype(np.int32), "int_val"),
           types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val"),
           types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
           types_pb2.DT_STRING: (np.dtype(object), "string_val")}


def _decode_exact(proto: Any, dims: Sequence[int]) -> Optional[np.ndarray]:
    """The array `tf.make_ndarray(proto)` returns, for the common dtypes whose values fill `dims` exactly.

    None for anything else (other dtypes, too few or too many values): `tf.make_ndarray` then decides,
    repeating a short list's last value or failing. Skips its per-call Python overhead (about 10 to
    30 us a tensor), which every request pays.
    """
    entry = _DECODE.get(proto.dtype)
    if entry is None:
        return None
    dtype, field = entry
    count = math.prod(dims)
    if proto.tensor_content:
        if dtype.kind == "O" or len(proto.tensor_content) != count * dtype.itemsize:
            return None
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(dims).copy()
    values = getattr(proto, field)
    if len(values) != count:
        return None
    return np.array(list(values) if dtype.kind == "O" else values, dtype=dtype).reshape(dims)


_CONTENT_DTYPES = {np.dtype(np.float32): tf.float32, np.dtype(np.float64): tf.float64, np.dtype(np.int32): tf.int32,
                   np.dtype(np.int64): tf.int64, np.dtype(np.bool_): tf.bool}


def tensor_proto(value: np.ndarray, out: Optional[tensor_pb2.TensorProto] = None) -> tensor_pb2.TensorProto:
    """An output array as a TensorProto, as `tf.make_tensor_proto` writes it, without its per-call overhead.

    float32/64, int32/64 and bool go into `tensor_content` (little-endian), bytes and str into
    `string_val` (str as UTF-8); any other dtype through `tf.make_tensor_proto`. `out`: an empty
    TensorProto to fill (e.g. a response's `outputs[name]`, saving a copy); returned.
    """
    value = np.asarray(value)
    proto = tensor_pb2.TensorProto() if out is None else out
    dtype = _CONTENT_DTYPES.get(value.dtype)
    if dtype is not None:
        proto.dtype = dtype.as_datatype_enum
        proto.tensor_content = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
    elif value.dtype.kind in "SO":
        proto.dtype = tf.string.as_datatype_enum
        try:
            proto.string_val.extend(value.ravel().tolist())
        except TypeError:  # objects that are not bytes
            return _general_proto(value, out)
    elif value.dtype.kind == "U":
        proto.dtype = tf.string.as_datatype_enum
        proto.string_val.extend(v.encode("utf-8") for v in value.ravel().tolist())
    else:
        return _general_proto(value, out)
    dims = proto.tensor_shape.dim
    for d in value.shape:
        dims.add().size = d
    return proto


def _general_proto(value: np.ndarray, out: Optional[tensor_pb2.TensorProto]) -> tensor_pb2.TensorProto:
    """`tf.make_tensor_proto(value)`, copied into `out` (cleared first) when given."""
    proto = tf.make_tensor_proto(value)
    if out is None:
        return proto
    out.CopyFrom(proto)
    return out


def _shape_str(shape: tf.TensorShape) -> str:
    if shape.rank is None:
        return "<unknown rank>"
    return "[" + ", ".join("None" if d is None else str(d) for d in shape.as_list()) + "]"


def clean_tf_message(message: str) -> str:
    """An op error's own message, without TensorFlow's "Graph execution error" preamble and node trace."""
    message = message.split("\n\t [[")[0].strip()
    if "<stack traces unavailable>\n" in message:
        message = message.split("<stack traces unavailable>\n", 1)[1]
    elif message.startswith("Graph execution error:") and "Detected at node" in message:
        message = message.strip().splitlines()[-1]
    return message.strip()


def graph_error(e: tf.errors.OpError) -> RequestError:
    """Maps an error raised while running a signature to the status TF Serving would return."""
    message = clean_tf_message(e.message)
    codes = {
        tf.errors.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
        tf.errors.OUT_OF_RANGE: grpc.StatusCode.OUT_OF_RANGE,
        tf.errors.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
        tf.errors.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
    return RequestError(codes.get(e.error_code, grpc.StatusCode.INTERNAL), message)


def signature_of(servable: SignatureOwner, signature_name: str) -> tuple[str, Signature]:
    """The signature key (empty means `serving_default`) and signature a request names.

    Raises:
      RequestError: INVALID_ARGUMENT for a signature the version does not have.
    """
    key = signature_name or DEFAULT_SIGNATURE
    signature = servable.signatures.get(key)
    if signature is None:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f'Serving signature key "{key}" not found. Signatures of model {servable.name} '
                           f"version {servable.version}: {', '.join(sorted(servable.signatures))}")
    return key, signature


def check_names(key: str, signature: Signature, sent: Iterable[str], output_filter: Sequence[str]) -> list[str]:
    """Checks the input names sent and the output filter; returns the output names to return.

    Raises:
      RequestError: INVALID_ARGUMENT listing missing and unexpected inputs, or unknown outputs.
    """
    if not output_filter and _same_names(sent, signature.inputs):  # the common case, without building sets
        return list(signature.outputs)
    sent, expected = set(sent), set(signature.inputs)
    if sent != expected:
        missing, extra = sorted(expected - sent), sorted(sent - expected)
        parts = []
        if missing:
            parts.append(f"missing input(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected input(s): {', '.join(extra)}")
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"input names do not match signature \"{key}\": {'; '.join(parts)} "
                           f"(expected: {', '.join(sorted(expected))})")
    wanted = list(dict.fromkeys(output_filter)) or list(signature.outputs)
    unknown = sorted(set(wanted) - set(signature.outputs))
    if unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"output tensor alias(es) not found in signature \"{key}\": {', '.join(unknown)} "
                           f"(outputs: {', '.join(signature.outputs)})")
    return wanted


def _same_names(sent: Iterable[str], expected: Mapping[str, Any]) -> bool:
    """Whether `sent` (a map or collection supporting `len` and `in`) holds exactly `expected`'s keys."""
    try:
        return len(sent) == len(expected) and all(n in sent for n in expected)  # type: ignore[arg-type]
    except TypeError:  # an iterable without len / in: the general check decides
        return False


def run_signature(key: str, signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs a signature on validated input arrays; returns every output as an array.

    Raises:
      RequestError: an error raised in the graph (see `graph_error`) or inputs the function rejects.
    """
    try:
        tensors = {n: tf.convert_to_tensor(inputs[n], dtype=spec.dtype) for n, spec in signature.inputs.items()}
        outputs = signature.fn(**tensors)
    except tf.errors.OpError as e:
        raise graph_error(e) from e
    except (TypeError, ValueError) as e:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"signature \"{key}\" rejected the inputs: {e}") from e
    return {n: outputs[n].numpy() for n in signature.outputs}


def run_predict(servable: SignatureOwner, request: predict_pb2.PredictRequest,
                max_elements: int) -> dict[str, np.ndarray]:
    """Runs a PredictRequest's signature on one model version, unbatched; returns the (filtered) outputs.

    Used for warmup requests; the servers go through `serving.predictor.Predictor` (batching).

    Raises:
      RequestError: an unknown signature, input names that differ from the
        signature's, an unknown output filter, a bad input tensor (see
        `tensor_from_proto`), or an error raised in the graph (see `graph_error`).
    """
    key, signature = signature_of(servable, request.model_spec.signature_name)
    wanted = check_names(key, signature, request.inputs, list(request.output_filter))
    arrays = {n: tensor_from_proto(n, request.inputs[n], spec, max_elements) for n, spec in signature.inputs.items()}
    outputs = run_signature(key, signature, arrays)
    return {n: outputs[n] for n in wanted}

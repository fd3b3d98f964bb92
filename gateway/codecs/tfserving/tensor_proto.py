"""TensorFlow's `TensorProto` <-> the gateway's `Tensor`.

A TensorProto carries its values in exactly one of two ways (PROTOCOLS §2.3): `tensor_content`, the raw
little-endian row-major buffer (every numeric dtype), or a typed repeated field (`float_val`, `int_val`,
`string_val`, `half_val`, ...). TF Serving replies with the typed fields by default and with
`tensor_content` under `--enable_serialization_as_tensor_content`, so decoding takes both. A typed field
follows TensorFlow's own rule (`Tensor::FromProto`): fewer values than the shape holds repeat the last
one (one value fills the shape, as `tf.make_tensor_proto(7.0, shape=[2, 3])` sends it), none at all are
zeros. A tensor filled that way may not exceed `max_bytes` (by default the gateway's request limit): a
28-byte message must not become gigabytes.

`float_val` / `double_val` are read and written as packed wire bytes with numpy (`wire`): through the
protobuf runtime element by element they cost ~100 ns a value (7 ms for 64k floats) against 0.5 ms.
Varint fields (ints, bool, half_val) go through the runtime: numpy's varint passes measured slower there
(12 ms against 4.5 ms for 64k negative int32s, which are 10-byte varints).
Encoding writes `tensor_content` (one `tobytes`) unless `typed=True` asks for the typed fields: TF
Serving's own replies use them, and clients that read `float_val` directly exist. DT_STRING always
travels in `string_val`; fp16 and bf16 in `half_val` as their 16-bit patterns.

Errors are `InvalidRequest`s naming the tensor (`input 'x': ...`); decoders of replies pass
`role="output"` and their callers re-raise as `BackendError`.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from gateway.codecs.tfserving import wire
from gateway.codecs.v2.tensors import check_shape, fmt_shape, owner, reshape
from gateway.datatypes import NUMPY_DTYPES
from gateway.errors import InvalidRequest
from gateway.proto.tfserving.tensorflow.core.framework import tensor_pb2, types_pb2
from gateway.types import Tensor

# A tensor filled from fewer values than it holds may be at most this large unless the caller says
# otherwise: the gateway's default request limit (listeners.max_request_bytes).
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024

# TensorFlow DataType enum value <-> OIP datatype (`tensorflow/core/framework/types.proto`).
DTYPE_TO_DATATYPE: Final[dict[int, str]] = {
    types_pb2.DT_FLOAT: "FP32",
    types_pb2.DT_DOUBLE: "FP64",
    types_pb2.DT_HALF: "FP16",
    types_pb2.DT_BFLOAT16: "BF16",
    types_pb2.DT_INT8: "INT8",
    types_pb2.DT_INT16: "INT16",
    types_pb2.DT_INT32: "INT32",
    types_pb2.DT_INT64: "INT64",
    types_pb2.DT_UINT8: "UINT8",
    types_pb2.DT_UINT16: "UINT16",
    types_pb2.DT_UINT32: "UINT32",
    types_pb2.DT_UINT64: "UINT64",
    types_pb2.DT_BOOL: "BOOL",
    types_pb2.DT_STRING: "BYTES",
}
DATATYPE_TO_DTYPE: Final[dict[str, int]] = {v: k for k, v in DTYPE_TO_DATATYPE.items()}

# The typed field each datatype's values travel in when `tensor_content` is not used.
_TYPED_FIELD: Final[dict[str, str]] = {
    "FP32": "float_val",
    "FP64": "double_val",
    "FP16": "half_val",
    "BF16": "half_val",
    "INT8": "int_val",
    "INT16": "int_val",
    "INT32": "int_val",
    "UINT8": "int_val",
    "UINT16": "int_val",
    "INT64": "int64_val",
    "UINT32": "uint32_val",
    "UINT64": "uint64_val",
    "BOOL": "bool_val",
    "BYTES": "string_val",
}
_VALUE_FIELDS: Final = frozenset(_TYPED_FIELD.values()) | {
    "scomplex_val",
    "dcomplex_val",
    "resource_handle_val",
    "variant_val",
}
_FIELD_NUMBER: Final[dict[str, int]] = {
    name: tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[name].number for name in _VALUE_FIELDS
}
# Typed fields of fixed-width elements, as they lie on the wire; the others are varints.
_FIXED: Final[dict[str, np.dtype]] = {"float_val": np.dtype("<f4"), "double_val": np.dtype("<f8")}


def datatype_of(dtype: int, name: str, *, role: str = "input") -> str:
    """The OIP datatype of a TensorFlow DataType; `InvalidRequest` for one the gateway cannot carry."""
    try:
        return DTYPE_TO_DATATYPE[dtype]
    except KeyError:
        known = dtype in types_pb2.DataType.values()
        shown = types_pb2.DataType.Name(dtype) if known else str(dtype)  # type: ignore[arg-type]
        raise InvalidRequest(f"{owner(role, name)}: unsupported dtype {shown}") from None


def shape_of(proto: Any, name: str, *, role: str = "input") -> tuple[int, ...]:
    """The dims of a `TensorShapeProto` (of a tensor, so every dim must be known)."""
    if proto.unknown_rank:
        raise InvalidRequest(f"{owner(role, name)}: tensor_shape has unknown rank")
    return check_shape(name, [d.size for d in proto.dim], role=role)


def tensor_from_proto(
    name: str, proto: Any, *, role: str = "input", max_bytes: int = DEFAULT_MAX_BYTES
) -> Tensor:
    """Decode a TensorProto (either value representation; any TensorProto class: the gateway's or
    TensorFlow's own, which read alike).

    Raises:
        InvalidRequest: Unsupported dtype, bad shape, several value fields set, more values than the
            shape holds (or a `tensor_content` size that does not match it), or a filled tensor over
            `max_bytes`.
    """
    datatype = datatype_of(proto.dtype, name, role=role)
    dims = shape_of(proto.tensor_shape, name, role=role)
    count = math.prod(dims)
    dtype = NUMPY_DTYPES[datatype]
    present = [f.name for f, _ in proto.ListFields() if f.name in _VALUE_FIELDS]
    content = proto.tensor_content
    if content:
        if present:
            raise InvalidRequest(f"{owner(role, name)}: both tensor_content and {present[0]} are set")
        if datatype == "BYTES":
            raise InvalidRequest(f"{owner(role, name)}: DT_STRING goes in string_val, not tensor_content")
        if len(content) != count * dtype.itemsize:
            raise InvalidRequest(
                f"{owner(role, name)}: tensor_content holds {len(content)} bytes, shape {fmt_shape(dims)} of "
                f"{datatype} needs {count * dtype.itemsize}"
            )
        raw = np.frombuffer(content, dtype=np.uint8 if datatype == "BOOL" else dtype)
        array = raw.astype(np.bool_) if datatype == "BOOL" else raw
        return Tensor(name, datatype, dims, reshape(name, array, dims, role=role))
    field = _TYPED_FIELD[datatype]
    if present and present != [field]:
        wrong = next(p for p in present if p != field)
        raise InvalidRequest(f"{owner(role, name)}: {wrong} set on a {datatype} tensor (expected {field})")
    values = _typed_values(name, proto, datatype, field, role)
    given = len(values)
    if given != count:
        if given > count:
            raise InvalidRequest(
                f"{owner(role, name)}: {field} holds {given} values, shape {fmt_shape(dims)} holds {count}"
            )
        size = count * (dtype.itemsize if datatype != "BYTES" else max((len(v) for v in values), default=0))
        if size > max_bytes:
            raise InvalidRequest(
                f"{owner(role, name)}: {given} values in {field} would fill shape {fmt_shape(dims)}, "
                f"{size} bytes: over the {max_bytes}-byte limit"
            )
        values = _filled(values, count, datatype)
    return Tensor(name, datatype, dims, reshape(name, values, dims, role=role))


def _filled(values: np.ndarray, count: int, datatype: str) -> np.ndarray:
    """TensorFlow's rule for a short typed field: the last value repeats; none at all are zeros."""
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = values[-1] if len(values) else b""
        out[: len(values)] = values
        return out
    out = np.zeros(count, dtype=values.dtype)
    if len(values):
        out[: len(values)] = values
        out[len(values) :] = values[-1]
    return out


def _typed_values(name: str, proto: Any, datatype: str, field: str, role: str) -> np.ndarray:
    """A typed field's values as an array of the datatype's dtype."""
    values = getattr(proto, field)
    if datatype == "BYTES":
        strings = np.empty(len(values), dtype=object)
        strings[:] = list(values)
        return strings
    if field in _FIXED:
        try:
            payload = wire.packed_field(proto.SerializeToString(), _FIELD_NUMBER[field])
        except wire.WireError:
            payload = None
        if payload is not None:
            return np.frombuffer(payload, dtype=_FIXED[field])
        return np.array(values, dtype=_FIXED[field])  # unpacked on the wire: legal, rare
    if field == "half_val":
        bits = np.fromiter(values, np.int64, len(values)).astype(np.uint16)
        return bits.view("<f2") if datatype == "FP16" else bits
    if datatype == "BOOL":
        return np.fromiter(values, np.bool_, len(values))
    wide = np.fromiter(values, np.uint64 if field == "uint64_val" else np.int64, len(values))
    dtype = NUMPY_DTYPES[datatype]
    if datatype in ("INT8", "INT16", "UINT8", "UINT16"):  # carried in int_val's int32s
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise InvalidRequest(f"{owner(role, name)}: a value is out of range for {dtype.name}")
    return wide.astype(dtype)


def tensor_to_proto(tensor: Tensor, proto: Any, *, typed: bool = False) -> None:
    """Fill `proto` (an empty TensorProto, e.g. a map entry) with `tensor`.

    Args:
        tensor: The tensor; its datatype must have a TensorFlow dtype (every OIP datatype does).
        proto: An empty TensorProto (the gateway's or TensorFlow's class).
        typed: Write the typed `*_val` field rather than `tensor_content` (TF Serving's default reply).
    """
    proto.dtype = DATATYPE_TO_DTYPE[tensor.datatype]
    for size in tensor.shape:
        proto.tensor_shape.dim.add().size = size
    datatype = tensor.datatype
    data = tensor.data
    if datatype == "BYTES":
        proto.string_val.extend(_as_bytes(item) for item in data.ravel())
        return
    dtype = NUMPY_DTYPES[datatype]
    if data.dtype != dtype:  # ml_dtypes' bfloat16 is reinterpreted as its bit patterns, others converted
        data = data.view(dtype) if datatype == "BF16" else data.astype(dtype)
    flat = np.ascontiguousarray(data).ravel()
    if not typed:
        proto.tensor_content = flat.tobytes()
        return
    if not flat.size:
        return
    field = _TYPED_FIELD[datatype]
    if field in _FIXED:  # one packed field, merged as wire bytes
        proto.MergeFromString(wire.len_field(_FIELD_NUMBER[field], flat.tobytes()))
    elif field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogatepass")
    raise InvalidRequest(f"BYTES element of type {type(item).__name__} is neither bytes nor str")

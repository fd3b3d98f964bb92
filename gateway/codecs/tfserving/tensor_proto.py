"""TensorFlow's `TensorProto` <-> the gateway's `Tensor`.

A TensorProto carries its values in exactly one of two ways (PROTOCOLS §2.3): `tensor_content`, the raw
little-endian row-major buffer (every numeric dtype), or a typed repeated field (`float_val`, `int_val`,
`string_val`, `half_val`, ...). TF Serving replies with the typed fields by default and with
`tensor_content` under `--enable_serialization_as_tensor_content`, so decoding takes both. A typed field
holding a single value is broadcast to the whole shape (TensorProto's version-0 rule, which
`tf.make_tensor_proto` uses for a scalar filled into a shape).

Encoding writes `tensor_content` (one `tobytes`, no per-element work) unless `typed=True` asks for the
typed fields: TF Serving's own replies use them, and clients that read `float_val` directly exist.
DT_STRING always travels in `string_val`; fp16 and bf16 in `half_val` as their 16-bit patterns.

Errors are `InvalidRequest`s naming the tensor (`input 'x': ...`); decoders of replies pass
`role="output"` and their callers re-raise as `BackendError`.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np

from gateway.codecs.v2.tensors import check_shape, owner, reshape
from gateway.datatypes import NUMPY_DTYPES
from gateway.errors import InvalidRequest
from gateway.proto.tfserving.tensorflow.core.framework import tensor_pb2, types_pb2
from gateway.types import Tensor

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
# How a typed field's Python values are read into numpy before the cast to the tensor's dtype: half_val
# holds 16-bit patterns in int32s, which must be narrowed, not converted.
_FIELD_DTYPE: Final[dict[str, np.dtype]] = {
    "float_val": np.dtype("<f4"),
    "double_val": np.dtype("<f8"),
    "half_val": np.dtype("<i4"),
    "int_val": np.dtype("<i4"),
    "int64_val": np.dtype("<i8"),
    "uint32_val": np.dtype("<u4"),
    "uint64_val": np.dtype("<u8"),
    "bool_val": np.dtype(np.bool_),
}


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


def tensor_from_proto(name: str, proto: tensor_pb2.TensorProto, *, role: str = "input") -> Tensor:
    """Decode a TensorProto (either value representation).

    Raises:
        InvalidRequest: Unsupported dtype, bad shape, several value fields set, or a value count (or
            `tensor_content` size) that does not match the shape.
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
                f"{owner(role, name)}: tensor_content holds {len(content)} bytes, shape {list(dims)} of "
                f"{datatype} needs {count * dtype.itemsize}"
            )
        raw = np.frombuffer(content, dtype=np.uint8 if datatype == "BOOL" else dtype)
        array = raw.astype(np.bool_) if datatype == "BOOL" else raw
        return Tensor(name, datatype, dims, reshape(name, array, dims, role=role))
    expected = _TYPED_FIELD[datatype]
    if present and present != [expected]:
        wrong = next(p for p in present if p != expected)
        raise InvalidRequest(f"{owner(role, name)}: {wrong} set on a {datatype} tensor (expected {expected})")
    values = getattr(proto, expected)
    given = len(values)
    if datatype == "BYTES":
        array = np.empty(given, dtype=object)
        array[:] = list(values)
    else:
        array = np.array(values, dtype=_FIELD_DTYPE[expected])
        if expected == "half_val":
            array = array.astype("<u2")
            if datatype == "FP16":
                array = array.view("<f2")
        elif array.dtype != dtype:
            array = _narrow(name, array, dtype, role)
    if given != count:
        if given != 1:  # one value is broadcast (version 0); any other count is a mistake
            raise InvalidRequest(
                f"{owner(role, name)}: {expected} holds {given} values, shape {list(dims)} needs {count}"
            )
        array = np.broadcast_to(array, (count,))
    return Tensor(name, datatype, dims, reshape(name, array, dims, role=role))


def _narrow(name: str, array: np.ndarray, dtype: np.dtype, role: str) -> np.ndarray:
    """int_val's int32s into INT8/INT16/UINT8/UINT16, refusing values the type cannot hold."""
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    if info is not None and array.size and (array.min() < info.min or array.max() > info.max):
        raise InvalidRequest(f"{owner(role, name)}: a value is out of range for {dtype.name}")
    return array.astype(dtype)


def tensor_to_proto(tensor: Tensor, proto: tensor_pb2.TensorProto, *, typed: bool = False) -> None:
    """Fill `proto` (a message in place, e.g. a map entry) with `tensor`.

    Args:
        tensor: The tensor; its datatype must have a TensorFlow dtype (every OIP datatype does).
        proto: An empty TensorProto.
        typed: Write the typed `*_val` field rather than `tensor_content` (TF Serving's default reply).
    """
    proto.dtype = DATATYPE_TO_DTYPE[tensor.datatype]  # type: ignore[assignment]
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
    if not typed:
        proto.tensor_content = np.ascontiguousarray(data).tobytes()
        return
    field = _TYPED_FIELD[datatype]
    flat = data.ravel()
    if field == "half_val":
        flat = flat.view("<u2").astype("<i4")
    getattr(proto, field).extend(flat.tolist())


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    raise InvalidRequest(f"BYTES element of type {type(item).__name__} is neither bytes nor str")

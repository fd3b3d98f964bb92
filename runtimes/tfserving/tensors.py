"""TensorProto <-> numpy, as TF Serving reads and writes it (PROTOCOLS.md §2.3).

Reading accepts both `tensor_content` and the typed `*_val` fields, with TensorFlow's version-0 rule for
the latter: fewer values than the shape holds repeat the last one (one value broadcasts), none at all
mean zeros. Writing uses the typed fields by default, as the real server does, or `tensor_content` where
`--enable_serialization_as_tensor_content` asks; DT_STRING is always `string_val`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from gateway.errors import InvalidRequest, clip
from runtimes.tfserving import wire


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one DataType is held: numpy dtype, typed field (name, number) and its wire element type."""

    dtype: np.dtype
    field: str
    number: int
    # "f": fixed-width, read with frombuffer as `wire_dtype`; "v": varints; "s": bytes (string_val).
    encoding: str
    wire_dtype: np.dtype


def _kind(dtype: Any, field: str, encoding: str, wire_dtype: Any = np.uint64) -> _Kind:
    number = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name[field].number
    return _Kind(np.dtype(dtype), field, number, encoding, np.dtype(wire_dtype))


KINDS: Final[dict[int, _Kind]] = {
    types_pb2.DT_FLOAT: _kind(np.float32, "float_val", "f", "<f4"),
    types_pb2.DT_DOUBLE: _kind(np.float64, "double_val", "f", "<f8"),
    types_pb2.DT_INT32: _kind(np.int32, "int_val", "v"),
    types_pb2.DT_UINT8: _kind(np.uint8, "int_val", "v"),
    types_pb2.DT_INT16: _kind(np.int16, "int_val", "v"),
    types_pb2.DT_INT8: _kind(np.int8, "int_val", "v"),
    types_pb2.DT_UINT16: _kind(np.uint16, "int_val", "v"),
    types_pb2.DT_STRING: _kind(object, "string_val", "s"),
    types_pb2.DT_COMPLEX64: _kind(np.complex64, "scomplex_val", "f", "<f4"),
    types_pb2.DT_INT64: _kind(np.int64, "int64_val", "v"),
    types_pb2.DT_BOOL: _kind(np.bool_, "bool_val", "v"),
    types_pb2.DT_COMPLEX128: _kind(np.complex128, "dcomplex_val", "f", "<f8"),
    # fp16 and bf16 travel as their 16 bits in an int32 field.
    types_pb2.DT_HALF: _kind(np.float16, "half_val", "v"),
    types_pb2.DT_BFLOAT16: _kind(ml_dtypes.bfloat16, "half_val", "v"),
    types_pb2.DT_UINT32: _kind(np.uint32, "uint32_val", "v"),
    types_pb2.DT_UINT64: _kind(np.uint64, "uint64_val", "v"),
}
_BY_NUMPY: Final = {kind.dtype: code for code, kind in KINDS.items()}


def dtype_name(code: int) -> str:
    """`DT_FLOAT` for 1: the name TF Serving's messages use."""
    try:
        return str(types_pb2.DataType.Name(code))
    except ValueError:
        return f"DataType({code})"


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of a DataType; `InvalidRequest` for types this runtime does not carry."""
    kind = KINDS.get(code)
    if kind is None:
        raise InvalidRequest(f"unsupported tensor type {dtype_name(code)}")
    return kind.dtype


def datatype_of(dtype: np.dtype) -> int:
    """The DataType of a numpy dtype (bytes and str arrays are DT_STRING)."""
    if dtype.kind in "OSU":
        return int(types_pb2.DT_STRING)
    code = _BY_NUMPY.get(dtype)
    if code is None:
        raise InvalidRequest(f"numpy dtype {dtype} has no TensorFlow DataType")
    return code


def to_ndarray(
    proto: tensor_pb2.TensorProto, name: str = "tensor", *, max_bytes: int | None = None
) -> np.ndarray:
    """A TensorProto's value; `InvalidRequest` naming `name` when it is malformed, or when its shape
    holds more than `max_bytes` (a typed field's values are filled out to the shape: a few bytes of
    request must not allocate gigabytes)."""
    label = clip(name)
    kind = KINDS.get(proto.dtype)
    if kind is None:
        raise InvalidRequest(f"input '{label}': unsupported tensor type {dtype_name(proto.dtype)}")
    if proto.tensor_shape.unknown_rank:
        raise InvalidRequest(f"input '{label}': the tensor shape must be known")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    dims = clip(str(list(shape)), 128)
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"input '{label}': negative dimension in shape {dims}")
    count = math.prod(shape)
    nbytes = count * kind.dtype.itemsize
    if max_bytes is not None and nbytes > max_bytes:
        raise InvalidRequest(
            f"input '{label}': shape {dims} of {dtype_name(proto.dtype)} needs {nbytes} bytes, over the "
            f"request limit of {max_bytes}"
        )
    if proto.tensor_content:
        if kind.encoding == "s":
            raise InvalidRequest(f"input '{label}': DT_STRING must be sent in string_val")
        if len(proto.tensor_content) != nbytes:
            raise InvalidRequest(
                f"input '{label}': tensor_content holds {len(proto.tensor_content)} bytes, shape "
                f"{dims} of {dtype_name(proto.dtype)} needs {nbytes}"
            )
        return np.frombuffer(proto.tensor_content, kind.dtype).reshape(shape)
    values = _typed_values(proto, kind)
    if values.size > count:
        raise InvalidRequest(
            f"input '{label}': {values.size} values in {kind.field} for shape {dims} ({count} elements)"
        )
    if values.size < count:
        # Version-0 semantics (TensorFlow's own FromProto): the last value repeats; no values are zeros.
        fill = values[-1] if values.size else (b"" if kind.encoding == "s" else 0)
        padded = np.empty(count, kind.dtype)
        padded[: values.size] = values
        padded[values.size :] = fill
        values = padded
    return values.reshape(shape)


def _typed_values(proto: tensor_pb2.TensorProto, kind: _Kind) -> np.ndarray:
    if kind.encoding == "s":
        out = np.empty(len(proto.string_val), object)
        out[:] = list(proto.string_val)
        return out
    try:
        payload = wire.packed_field(proto.SerializeToString(), kind.number)
    except wire.WireError:
        payload = None
    if payload is None:  # unpacked on the wire: the slow, always-right way
        raw = np.array(getattr(proto, kind.field), dtype=kind.wire_dtype if kind.encoding == "f" else None)
        if kind.encoding == "v":
            raw = raw.astype(np.int64).astype(np.uint64) if raw.size else np.zeros(0, np.uint64)
    elif kind.encoding == "f":
        raw = np.frombuffer(payload, kind.wire_dtype)
    else:
        raw = wire.decode_varints(payload)
    return _from_wire(raw, kind)


def _from_wire(raw: np.ndarray, kind: _Kind) -> np.ndarray:
    if kind.encoding == "f":
        return raw.view(kind.dtype)  # complex: (re, im) pairs of the wire floats
    if kind.field == "half_val":
        return raw.astype(np.uint16).view(kind.dtype)
    if kind.dtype == np.bool_:
        return np.asarray(raw != 0)
    if kind.field in ("int_val", "int64_val"):
        # int32 and int64 fields hold negatives as 64-bit two's complement varints.
        return raw.view(np.int64).astype(kind.dtype)
    return raw.astype(kind.dtype)


def fill_proto(
    proto: tensor_pb2.TensorProto, array: np.ndarray, *, as_content: bool = False
) -> tensor_pb2.TensorProto:
    """Writes `array` into `proto` (in place: a map entry of a response, say) and returns it."""
    code = datatype_of(array.dtype)
    kind = KINDS[code]
    proto.dtype = code
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if kind.encoding == "s":
        proto.string_val.extend(_as_bytes(v) for v in array.ravel().tolist())
    elif as_content:
        proto.tensor_content = np.ascontiguousarray(array, kind.dtype.newbyteorder("<")).tobytes()
    elif array.size:
        proto.MergeFromString(wire.len_field(kind.number, _to_wire(array, kind)))
    return proto


def to_proto(array: np.ndarray, *, as_content: bool = False) -> tensor_pb2.TensorProto:
    return fill_proto(tensor_pb2.TensorProto(), array, as_content=as_content)


def _to_wire(array: np.ndarray, kind: _Kind) -> bytes:
    flat = np.ascontiguousarray(array).ravel()
    if kind.encoding == "f":
        return flat.astype(kind.dtype.newbyteorder("<"), copy=False).tobytes()
    if kind.field == "half_val":
        return wire.encode_varints(flat.view(np.uint16).astype(np.uint64))
    if flat.dtype.kind == "i":
        return wire.encode_varints(flat.astype(np.int64).view(np.uint64))
    return wire.encode_varints(flat.astype(np.uint64))


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise InvalidRequest(f"a DT_STRING tensor holds a {type(value).__name__}, not bytes")

"""Tensor payloads of the Open Inference Protocol: raw little-endian buffers and JSON `data` arrays.

Both the REST and the gRPC codecs build `Tensor`s through these functions so that one set of checks
(datatype, shape, element counts) guards every entry point. Numeric data never goes through a Python loop:
buffers become arrays with `np.frombuffer` (zero-copy, hence read-only) and JSON lists with `np.asarray`.
Only BYTES tensors are walked element by element, because their 4-byte length prefixes must be.

Every error is an `InvalidRequest` whose message starts with the tensor's role and name
(`input 'x': ...`); the client-side codecs pass `role="output"` and re-raise as `BackendError`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from gateway.datatypes import JSON_FORBIDDEN, NUMPY_DTYPES
from gateway.errors import InvalidRequest, clip
from gateway.types import Tensor

INT64_MAX: Final = 2**63 - 1
# A BYTES element's length prefix is a uint32 (binary extension and Triton's raw gRPC contents).
_LEN_PREFIX: Final = struct.Struct("<I")
_BYTES_ELEMENT_MAX: Final = 2**32 - 1

# JSON numbers (as numpy infers them from a list) each datatype accepts: integers never come from floats
# (1.5 -> INT32 would silently truncate) and BOOL only from true/false, as Triton's JSON parser does.
_ACCEPTED_KINDS: Final[dict[str, str]] = {
    "BOOL": "b",
    **{t: "iu" for t in ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")},
    **{t: "iuf" for t in ("FP16", "FP32", "FP64")},
}


def check_shape(name: str, shape: Any, *, role: str = "input") -> tuple[int, ...]:
    """Validate a wire shape.

    Args:
        name: The tensor's name, for error messages.
        shape: The shape as decoded from the wire (JSON list or protobuf repeated int64).
        role: "input" or "output", for error messages.

    Returns:
        The shape as a tuple of non-negative ints that fit in int64.

    Raises:
        InvalidRequest: The shape is not a list of such ints (booleans are not ints here).
    """
    # Sequence admits protobuf repeated fields as well as JSON lists.
    if not isinstance(shape, Sequence) or isinstance(shape, str | bytes):
        raise InvalidRequest(
            f"{owner(role, name)}: 'shape' must be a list of integers, got {json_type(shape)}"
        )
    dims = tuple(shape)
    for dim in dims:
        # `type(...) is int` rejects bool (JSON true) and floats such as 2.0 in one test; numpy
        # integers only come from our own callers (shapes computed with numpy) and are accepted.
        if type(dim) is not int:
            if not isinstance(dim, np.integer):
                raise InvalidRequest(
                    f"{owner(role, name)}: shape {fmt_shape(dims)} has a non-integer dimension"
                )
            return check_shape(name, [int(d) if isinstance(d, np.integer) else d for d in dims], role=role)
        if dim < 0:
            raise InvalidRequest(f"{owner(role, name)}: shape {fmt_shape(dims)} has a negative dimension")
        if dim > INT64_MAX:
            raise InvalidRequest(f"{owner(role, name)}: shape {fmt_shape(dims)} has a dimension beyond int64")
    return dims


def int64_shape(name: str, shape: Sequence[int], *, role: str = "input") -> tuple[int, ...]:
    """`check_shape` for a protobuf `repeated int64` field, the hot path of every gRPC tensor.

    Such a field holds only ints within int64 by construction, so the sign is all that is left to check,
    and it is checked without a per-dimension Python loop (a slice of the field is a third of the cost of
    `tuple()` over it in the upb backend).
    """
    dims = tuple(shape[:])
    if dims and min(dims) < 0:
        raise InvalidRequest(f"{owner(role, name)}: shape {fmt_shape(dims)} has a negative dimension")
    return dims


def check_datatype(name: str, datatype: Any, *, role: str = "input") -> np.dtype:
    """The numpy dtype of an OIP datatype name; `InvalidRequest` naming the tensor if it is unknown."""
    if not isinstance(datatype, str):
        raise InvalidRequest(f"{owner(role, name)}: 'datatype' must be a string, got {json_type(datatype)}")
    try:
        return NUMPY_DTYPES[datatype]
    except KeyError:
        raise InvalidRequest(f"{owner(role, name)}: unknown datatype '{datatype[:32]}'") from None


def tensor_from_buffer(
    name: str,
    datatype: Any,
    shape: Any,
    buf: bytes | memoryview,
    *,
    role: str = "input",
) -> Tensor:
    """Build a tensor from its binary wire form (binary extension blob or gRPC raw contents).

    Args:
        name: Tensor name.
        datatype: OIP datatype name, as decoded from the wire (validated with `check_datatype`).
        shape: Wire shape, as decoded from the wire (validated with `check_shape`).
        buf: Little-endian row-major data; BYTES elements each carry a 4-byte LE length prefix.
        role: "input" or "output", for error messages.

    Returns:
        A tensor whose numeric data is a read-only view of `buf` (no copy); BOOL is normalised to 0/1.

    Raises:
        InvalidRequest: Unknown datatype, bad shape, or a buffer size that does not match the shape.
    """
    return buffer_tensor(name, datatype, check_shape(name, shape, role=role), buf, role=role)


def buffer_tensor(
    name: str, datatype: str, dims: tuple[int, ...], buf: bytes | memoryview, *, role: str = "input"
) -> Tensor:
    """`tensor_from_buffer` for a shape already checked (`check_shape`, `int64_shape`)."""
    dtype = check_datatype(name, datatype, role=role)
    count = math.prod(dims)
    if datatype == "BYTES":
        data = _split_bytes(name, dims, count, buf, role)
        return Tensor(name, datatype, dims, reshape(name, data, dims, role=role))
    nbytes = buf.nbytes if isinstance(buf, memoryview) else len(buf)
    expected = count * dtype.itemsize
    if nbytes != expected:
        raise InvalidRequest(
            f"{owner(role, name)}: expected {expected} bytes for shape {fmt_shape(dims)} of {datatype}, "
            f"got {nbytes}"
        )
    if datatype == "BOOL":
        # A byte other than 0/1 viewed as numpy bool is not a valid bool; normalise it (a copy, but
        # BOOL tensors are small and a stray 0x02 would otherwise reach the backend verbatim).
        array = np.frombuffer(buf, dtype=np.uint8).astype(np.bool_)
    else:
        array = np.frombuffer(buf, dtype=dtype)
    return Tensor(name, datatype, dims, reshape(name, array, dims, role=role))


def tensor_to_buffer(tensor: Tensor) -> bytes | memoryview:
    """The binary wire form of a tensor: little-endian row-major; BYTES with 4-byte LE length prefixes.

    Data of another dtype is converted to the datatype's dtype (ml_dtypes bfloat16 is reinterpreted,
    not converted, for BF16); BYTES elements may be `bytes` or `str` (UTF-8 encoded).

    Nothing is copied when the data is already in wire form: a tensor decoded from wire bytes gets those
    very bytes back (what protobuf fields need), other C-contiguous data a read-only memoryview over it
    (enough for `b"".join`). Use `wire_bytes` where only `bytes` will do.
    """
    data = tensor.data
    if tensor.datatype == "BYTES":
        return _join_bytes(data)
    dtype = NUMPY_DTYPES[tensor.datatype]
    if data.dtype != dtype:
        if tensor.datatype == "BF16" and data.dtype.itemsize == 2:
            data = data.view(dtype)  # bfloat16 (or any 2-byte type) already holds the bit patterns
        else:
            data = data.astype(dtype)
    if not data.flags.c_contiguous:
        return data.tobytes()
    base = _buffer_owner(data)
    if type(base) is bytes and len(base) == data.nbytes:
        return base  # contiguous and as long as its buffer: the array is that whole buffer
    return data.reshape(-1).data.cast("B").toreadonly()  # contiguous: reshape(-1) is a view


def wire_bytes(tensor: Tensor) -> bytes:
    """`tensor_to_buffer` as `bytes`: a copy only when the data is not already wire bytes."""
    buf = tensor_to_buffer(tensor)
    return buf if type(buf) is bytes else bytes(buf)


def _buffer_owner(data: np.ndarray) -> object:
    """The object whose memory an array views (reshapes and views chain through `.base`)."""
    base: object = data
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base


def tensor_from_list(
    name: str,
    datatype: str,
    shape: Sequence[int],
    data: Any,
    *,
    role: str = "input",
) -> Tensor:
    """Build a tensor from a JSON `data` array (nested or flat, row-major).

    BOOL takes JSON true/false, integer types take JSON integers within range, FP types take numbers,
    BYTES takes strings (UTF-8 encoded). BF16 cannot be carried by JSON.

    Raises:
        InvalidRequest: Unknown or JSON-forbidden datatype, bad shape, wrong element types,
            out-of-range integers, ragged nesting, or an element count that does not match the shape.
    """
    dims = check_shape(name, shape, role=role)
    dtype = check_datatype(name, datatype, role=role)
    if datatype in JSON_FORBIDDEN:
        raise InvalidRequest(
            f"{owner(role, name)}: {datatype} cannot be sent as JSON data; "
            "use the binary tensor data extension"
        )
    if not isinstance(data, list):
        raise InvalidRequest(f"{owner(role, name)}: 'data' must be an array, got {json_type(data)}")
    count = math.prod(dims)
    if datatype == "BYTES":
        array = _bytes_from_list(name, data, role)
    else:
        array = _numbers_from_list(name, datatype, dtype, data, role)
    if array.size != count:
        raise InvalidRequest(
            f"{owner(role, name)}: expected {count} elements for shape {fmt_shape(dims)}, got {array.size}"
        )
    return Tensor(name, datatype, dims, reshape(name, array, dims, role=role))


def reshape(name: str, data: np.ndarray, dims: tuple[int, ...], *, role: str = "input") -> np.ndarray:
    """`data` (holding exactly the shape's element count) in the shape `dims`.

    A shape can hold the right count and still be one numpy cannot build: more dimensions than it
    supports, or a zero-size shape such as [0, 2**62] whose other dimensions overflow its size
    arithmetic. Those are the client's error (`InvalidRequest`), not an internal one.
    """
    try:
        return data.reshape(dims)
    except ValueError:
        raise InvalidRequest(
            f"{owner(role, name)}: shape {fmt_shape(dims)} cannot be represented "
            f"({len(dims)} dimensions, or dimensions too large even for an empty tensor)"
        ) from None


def config_type(datatype: str) -> str:
    """Triton model-config type name of an OIP datatype (`FP32` -> `TYPE_FP32`, `BYTES` -> `TYPE_STRING`)."""
    return "TYPE_STRING" if datatype == "BYTES" else "TYPE_" + datatype


def datatype_from_config_type(type_name: str) -> str:
    """OIP datatype of a Triton model-config type name; ValueError if it has none (e.g. TYPE_INVALID)."""
    if type_name == "TYPE_STRING":
        return "BYTES"
    datatype = type_name.removeprefix("TYPE_")
    if datatype == type_name or datatype == "BYTES" or datatype not in NUMPY_DTYPES:
        raise ValueError(f"unknown model config data_type '{type_name}'")
    return datatype


def json_data(tensor: Tensor) -> np.ndarray | list[str] | None:
    """The flat JSON form of a tensor's data, or None if JSON cannot carry it (BF16, non-UTF-8 BYTES).

    Numeric data comes back as a flat C-contiguous numpy array for `orjson.OPT_SERIALIZE_NUMPY`.
    NaN and infinities have no JSON form; orjson writes them as null, so prefer binary for such data.
    """
    if tensor.datatype in JSON_FORBIDDEN:
        return None
    if tensor.datatype == "BYTES":
        try:
            return [_as_bytes(item).decode("utf-8") for item in tensor.data.ravel()]
        except UnicodeDecodeError:
            return None
    # Converting here keeps JSON and binary answers identical when a backend used a wider dtype.
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype]).reshape(-1)


def _numbers_from_list(name: str, datatype: str, dtype: np.dtype, data: list[Any], role: str) -> np.ndarray:
    try:
        inferred = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(f"{owner(role, name)}: 'data' is not a rectangular array of numbers") from None
    if inferred.size == 0:
        return np.empty(0, dtype=dtype)
    if datatype != "BOOL" and inferred.dtype.kind != "b" and _holds_bool(data):
        # numpy reads true/false beside numbers as 1/0; a client sending them has made a mistake.
        raise InvalidRequest(f"{owner(role, name)}: {datatype} data must be numbers, not true/false")
    if inferred.dtype.kind == "f" and _ACCEPTED_KINDS[datatype] == "iu":
        # numpy infers float64 when ints span both the int64 and the uint64 range ([0, 2**64 - 1]);
        # recheck such data exactly instead of rejecting it or losing precision.
        return _exact_integers(name, datatype, dtype, data, role)
    if inferred.dtype.kind not in _ACCEPTED_KINDS[datatype]:
        wanted = {"b": "true/false", "iu": "integers"}.get(_ACCEPTED_KINDS[datatype], "numbers")
        raise InvalidRequest(f"{owner(role, name)}: {datatype} data must be {wanted}")
    if dtype.kind in "iu" and inferred.dtype != dtype:
        info = np.iinfo(dtype)
        if inferred.min() < info.min or inferred.max() > info.max:
            raise InvalidRequest(f"{owner(role, name)}: a value is out of range for {datatype}")
    # Overflow to inf for huge FP values mirrors what any float parser does; do not warn about it.
    with np.errstate(over="ignore"):
        return inferred.astype(dtype, copy=False).reshape(-1)


def _holds_bool(items: list[Any]) -> bool:
    """Whether a JSON boolean is anywhere in (nested) `items`: `type` is mapped in C, one set per list."""
    kinds = set(map(type, items))
    if bool in kinds:
        return True
    return list in kinds and any(_holds_bool(item) for item in items if type(item) is list)


def _exact_integers(name: str, datatype: str, dtype: np.dtype, data: Any, role: str) -> np.ndarray:
    exact = np.asarray(data, dtype=object).reshape(-1)
    if not all(type(value) is int for value in exact):  # a slow path, taken only for floats or huge ints
        raise InvalidRequest(f"{owner(role, name)}: {datatype} data must be integers")
    try:
        return exact.astype(dtype)
    except OverflowError:
        raise InvalidRequest(f"{owner(role, name)}: a value is out of range for {datatype}") from None


def _bytes_from_list(name: str, data: list[Any], role: str) -> np.ndarray:
    flat: list[bytes] = []
    _flatten_strings(name, data, flat, role)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _flatten_strings(name: str, items: list[Any], out: list[bytes], role: str) -> tuple[int, ...]:
    """Appends the strings of nested lists to `out` in row-major order; returns the nesting's shape.

    Sibling lists must nest alike: ragged data is refused, as it is for numbers.
    """
    inner: tuple[int, ...] | None = None
    for item in items:
        if type(item) is str:
            out.append(item.encode("utf-8"))
            shape: tuple[int, ...] = ()
        elif type(item) is list:
            shape = _flatten_strings(name, item, out, role)
        else:
            raise InvalidRequest(f"{owner(role, name)}: BYTES data must be strings, got {json_type(item)}")
        if inner is None:
            inner = shape
        elif shape != inner:
            raise InvalidRequest(f"{owner(role, name)}: 'data' is ragged (nested lists of different lengths)")
    return (len(items), *(inner or ()))


def _split_bytes(
    name: str, dims: tuple[int, ...], count: int, buf: bytes | memoryview, role: str
) -> np.ndarray:
    raw = buf if isinstance(buf, bytes) else bytes(buf)  # one copy, then slicing yields bytes objects
    end = len(raw)
    unpack = _LEN_PREFIX.unpack_from
    items: list[bytes] = []
    append = items.append
    offset = 0
    for index in range(count):
        if offset + 4 > end:
            raise InvalidRequest(
                f"{owner(role, name)}: BYTES data holds {index} elements, "
                f"shape {fmt_shape(dims)} needs {count}"
            )
        (length,) = unpack(raw, offset)
        offset += 4
        stop = offset + length
        if stop > end:
            raise InvalidRequest(
                f"{owner(role, name)}: BYTES element {index} claims {length} bytes "
                f"but only {end - offset} remain"
            )
        append(raw[offset:stop])
        offset = stop
    if offset != end:
        raise InvalidRequest(
            f"{owner(role, name)}: {end - offset} bytes left over after the {count} BYTES elements "
            f"of shape {fmt_shape(dims)}"
        )
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def _join_bytes(data: np.ndarray) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    pack = _LEN_PREFIX.pack
    for item in data.ravel():
        element = _as_bytes(item)
        if len(element) > _BYTES_ELEMENT_MAX:
            raise ValueError("a BYTES element is longer than 2**32 - 1 bytes")
        append(pack(len(element)))
        append(element)
    return b"".join(parts)


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    raise TypeError(f"BYTES element of type {type(item).__name__} is neither bytes nor str")


def owner(role: str, name: str) -> str:
    """How messages name a tensor: its role and its (clipped: it comes from the client) name."""
    return f"{role} '{clip(name)}'"


def fmt_shape(dims: Sequence[Any]) -> str:
    # Shapes come from clients; keep an absurdly long one from flooding the error message.
    shown = ", ".join(str(d)[:24] for d in dims[:12])
    return f"[{shown}{', ...' if len(dims) > 12 else ''}]"


def json_type(value: Any) -> str:
    """How an error message names a JSON value's type ("a number", "an array", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__

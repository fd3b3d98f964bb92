"""TensorProto <-> numpy for the runtime, on the gateway's TF Serving codec: one converter for both
(`gateway.codecs.tfserving.tensor_proto`: both value representations, TensorFlow's fill rule bounded by
the request limit, packed float fields read as bytes, clipped names in errors).

What the runtime adds is what the Open Inference Protocol has no datatype for: DT_COMPLEX64/128, which a
SavedModel may take or give over gRPC (`scomplex_val` / `dcomplex_val` hold (real, imaginary) pairs), and
ml_dtypes' bfloat16 arrays for the model (the codec carries BF16 as its 16-bit patterns).
"""

from __future__ import annotations

import math
from typing import Any, Final

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from gateway.codecs.tfserving.tensor_proto import (
    DEFAULT_MAX_BYTES,
    DTYPE_TO_DATATYPE,
    shape_of,
    tensor_from_proto,
    tensor_to_proto,
)
from gateway.codecs.v2.tensors import owner
from gateway.datatypes import NUMPY_DTYPES, datatype_of
from gateway.errors import InvalidRequest
from gateway.types import Tensor

# Complex dtypes: numpy dtype, typed field, the float type of each half.
_COMPLEX: Final[dict[int, tuple[np.dtype, str, np.dtype]]] = {
    types_pb2.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val", np.dtype("<f4")),
    types_pb2.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val", np.dtype("<f8")),
}
_BF16: Final = np.dtype(ml_dtypes.bfloat16)


def dtype_name(code: int) -> str:
    """`DT_FLOAT` for 1: the name TF Serving's messages use."""
    try:
        return str(types_pb2.DataType.Name(code))
    except ValueError:
        return f"DataType({code})"


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of a DataType; `InvalidRequest` for types this runtime does not carry."""
    if code in _COMPLEX:
        return _COMPLEX[code][0]
    datatype = DTYPE_TO_DATATYPE.get(code)
    if datatype is None:
        raise InvalidRequest(f"unsupported tensor type {dtype_name(code)}")
    return _BF16 if datatype == "BF16" else NUMPY_DTYPES[datatype]


def to_ndarray(
    proto: tensor_pb2.TensorProto, name: str = "tensor", *, max_bytes: int = DEFAULT_MAX_BYTES
) -> np.ndarray:
    """A TensorProto's value; `InvalidRequest` naming `name` when it is malformed."""
    if proto.dtype in _COMPLEX:
        return _complex_from_proto(proto, name, max_bytes)
    tensor = tensor_from_proto(name, proto, max_bytes=max_bytes)
    data: np.ndarray = tensor.data
    return data.view(_BF16) if tensor.datatype == "BF16" else data


def fill_proto(
    proto: tensor_pb2.TensorProto, array: np.ndarray, *, as_content: bool = False
) -> tensor_pb2.TensorProto:
    """Writes `array` into `proto` (in place: a map entry of a response, say) and returns it: typed
    fields as TF Serving writes them, or `tensor_content` (`--enable_serialization_as_tensor_content`)."""
    if array.dtype.kind == "c":
        return _complex_to_proto(proto, array, as_content)
    try:
        datatype = datatype_of(array)
    except ValueError:
        raise InvalidRequest(f"numpy dtype {array.dtype} has no TensorFlow DataType") from None
    data = array
    if datatype == "BYTES" and array.dtype.kind != "O":
        data = array.astype(object)
    tensor_to_proto(Tensor("", datatype, tuple(array.shape), data), proto, typed=not as_content)
    return proto


def to_proto(array: np.ndarray, *, as_content: bool = False) -> tensor_pb2.TensorProto:
    return fill_proto(tensor_pb2.TensorProto(), array, as_content=as_content)


def _complex_from_proto(proto: Any, name: str, max_bytes: int) -> np.ndarray:
    dtype, field, half = _COMPLEX[proto.dtype]
    dims = shape_of(proto.tensor_shape, name)
    count = math.prod(dims)
    if proto.tensor_content:
        if len(proto.tensor_content) != count * dtype.itemsize:
            raise InvalidRequest(
                f"{owner('input', name)}: tensor_content holds {len(proto.tensor_content)} bytes, "
                f"{count * dtype.itemsize} needed"
            )
        return np.frombuffer(proto.tensor_content, dtype).reshape(dims)
    values = np.array(getattr(proto, field), dtype=half).view(dtype)
    if values.size > count:
        raise InvalidRequest(f"{owner('input', name)}: {values.size} values in {field}, shape holds {count}")
    if values.size < count:  # TensorFlow's rule: the last value repeats, none are zeros
        if count * dtype.itemsize > max_bytes:
            raise InvalidRequest(
                f"{owner('input', name)}: filling {field} is over the {max_bytes}-byte limit"
            )
        filled = np.zeros(count, dtype)
        if values.size:
            filled[: values.size] = values
            filled[values.size :] = values[-1]
        values = filled
    return values.reshape(dims)


def _complex_to_proto(proto: Any, array: np.ndarray, as_content: bool) -> tensor_pb2.TensorProto:
    code = types_pb2.DT_COMPLEX64 if array.dtype == np.complex64 else types_pb2.DT_COMPLEX128
    dtype, field, half = _COMPLEX[code]
    proto.dtype = code
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    flat = np.ascontiguousarray(array, dtype).ravel()
    if as_content:
        proto.tensor_content = flat.tobytes()
    else:
        getattr(proto, field).extend(flat.view(half).tolist())
    return proto  # type: ignore[no-any-return]

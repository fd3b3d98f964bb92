"""TF Serving's REST predict JSON <-> the runtime's numpy arrays, through the gateway's codec.

The JSON itself (row and columnar forms, `{"b64": ...}`, the NaN/Infinity tokens, `*_bytes` outputs, the
type checks that refuse 2.7 for an int or "1.5" for a float) is `gateway.codecs.tfserving.rest`'s; this
module only describes a signature to it in OIP terms and converts its `Tensor`s to and from the arrays
the signature runs on (BF16: uint16 bit patterns there, `ml_dtypes.bfloat16` here).

DT_COMPLEX64/128 have no OIP datatype, so the codec cannot carry them: a signature with a complex input
or output is refused over REST (INVALID_ARGUMENT) and served over gRPC only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import ml_dtypes
import numpy as np
import orjson

from gateway.codecs.tfserving import rest
from gateway.codecs.tfserving.tensor_proto import DTYPE_TO_DATATYPE
from gateway.errors import InvalidRequest, clip
from gateway.types import Tensor, TensorMetadata
from runtimes.tfserving.model import TensorInfo
from runtimes.tfserving.tensors import dtype_name

_SIGNATURE_KEY: Final = b"signature_name"


def signature_name(body: bytes) -> str:
    """The `signature_name` a predict body names ("" for none), read before the body is decoded: the
    codec needs the signature's inputs, which the name selects.

    A body that does not mention the key (the common case) is not parsed here; one that does, or that
    escapes characters (a key may be spelled with `\\u` escapes), is parsed once more than otherwise.
    A body that is not a JSON object is left to the codec, which reports the error.
    """
    if _SIGNATURE_KEY not in body and b"\\u" not in body:
        return ""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            doc = json.loads(body)  # TF Serving's NaN / Infinity tokens
        except (ValueError, RecursionError):
            return ""
    if not isinstance(doc, dict):
        return ""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise InvalidRequest("'signature_name' must be a string")
    return name


def input_metadata(infos: Sequence[TensorInfo]) -> list[TensorMetadata]:
    """The signature's inputs as the codec takes them (an unknown rank is described as [-1])."""
    return [TensorMetadata(info.alias, _datatype(info, "input"), info.shape or (-1,)) for info in infos]


def to_arrays(tensors: Sequence[Tensor]) -> dict[str, np.ndarray]:
    """The decoded tensors as the arrays the signature runs on, by input name."""
    return {t.name: t.data.view(ml_dtypes.bfloat16) if t.datatype == "BF16" else t.data for t in tensors}


def encode_outputs(infos: Sequence[TensorInfo], outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """The `:predict` answer for these outputs (those of `infos` present in `outputs`, in that order)."""
    tensors = []
    for info in infos:
        array = outputs.get(info.alias)
        if array is None:
            continue
        datatype = _datatype(info, "output")
        data = array.view(np.uint16) if datatype == "BF16" else array
        tensors.append(Tensor(info.alias, datatype, tuple(array.shape), data))
    return rest.encode_predict_response(tensors, row_format)


def dumps(doc: Any) -> bytes:
    """A status or metadata body."""
    return orjson.dumps(doc)


def _datatype(info: TensorInfo, role: str) -> str:
    datatype = DTYPE_TO_DATATYPE.get(info.dtype)
    if datatype is None:
        raise InvalidRequest(
            f"{role} '{clip(info.alias)}' is {dtype_name(info.dtype)}, which the REST API does not carry: "
            "use gRPC"
        )
    return datatype

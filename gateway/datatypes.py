"""Open Inference Protocol datatypes and their numpy equivalents.

BF16 has no numpy dtype; it travels as its raw 16-bit patterns (`uint16`) through the gateway, which never
does arithmetic on tensors. A runtime that computes with it views the buffer as `ml_dtypes.bfloat16`.
BYTES tensors are numpy object arrays of `bytes`.
"""

from __future__ import annotations

from typing import Final

import numpy as np

# OIP name -> numpy dtype (little-endian, as on the wire).
NUMPY_DTYPES: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
    "BYTES": np.dtype(object),
}

ALL_DATATYPES: Final[frozenset[str]] = frozenset(NUMPY_DTYPES)

# Types JSON can carry as numbers; FP16 is allowed (JSON numbers, rounded), BF16 is binary-only.
JSON_FORBIDDEN: Final[frozenset[str]] = frozenset({"BF16"})

_FROM_NUMPY: Final[dict[str, str]] = {
    np.dtype(np.bool_).str: "BOOL",
    "|u1": "UINT8",
    "<u2": "UINT16",
    "<u4": "UINT32",
    "<u8": "UINT64",
    "|i1": "INT8",
    "<i2": "INT16",
    "<i4": "INT32",
    "<i8": "INT64",
    "<f2": "FP16",
    "<f4": "FP32",
    "<f8": "FP64",
    "|O": "BYTES",
}


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype for an OIP datatype; KeyError for an unknown name (callers turn it into an error)."""
    return NUMPY_DTYPES[datatype]


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype for a numpy array (bfloat16 arrays from ml_dtypes map to BF16)."""
    if array.dtype.name == "bfloat16":
        return "BF16"
    key = array.dtype.newbyteorder("<").str if array.dtype.byteorder == ">" else array.dtype.str
    if array.dtype.kind in ("S", "U"):
        return "BYTES"
    try:
        return _FROM_NUMPY[key]
    except KeyError:
        raise ValueError(f"no Open Inference Protocol datatype for numpy dtype {array.dtype}") from None


def element_size(datatype: str) -> int:
    """Bytes per element for fixed-size datatypes; 0 for BYTES."""
    return 0 if datatype == "BYTES" else NUMPY_DTYPES[datatype].itemsize

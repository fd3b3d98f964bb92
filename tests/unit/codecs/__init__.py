"""Unit tests of the Open Inference Protocol codecs; `SAMPLES` holds one 2x3 tensor per datatype."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.types import Tensor

TESTDATA = Path(__file__).resolve().parents[2] / "testdata" / "v2"


def _bytes(*items: bytes) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array.reshape(2, 3)


def _extremes(dtype: type[np.integer]) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype=dtype)


# Values at each type's limits, so a lossy conversion anywhere shows up.
SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": _extremes(np.uint8),
    "UINT16": _extremes(np.uint16),
    "UINT32": _extremes(np.uint32),
    "UINT64": _extremes(np.uint64),
    "INT8": _extremes(np.int8),
    "INT16": _extremes(np.int16),
    "INT32": _extremes(np.int32),
    "INT64": _extremes(np.int64),
    "FP16": np.array([[0.5, -65504.0, 6.1e-5], [1.0, 0.0, -2.25]], dtype=np.float16),
    "FP32": np.array([[0.1, 3.4e38, 1e-45], [-1.5, 0.0, 7.0]], dtype=np.float32),
    "FP64": np.array([[0.1, 1.7e308, 5e-324], [-1.5, 0.0, 7.0]], dtype=np.float64),
    # bfloat16 bit patterns: 1.0, -2.0, +inf, smallest subnormal, 0, NaN
    "BF16": np.array([[0x3F80, 0xC000, 0x7F80], [0x0001, 0x0000, 0x7FC0]], dtype=np.uint16),
    "BYTES": _bytes(b"", b"abc", "h\u00e9llo \u4e16\u754c".encode(), b"x" * 300, b"\x00", b" "),
}

# JSON can carry every datatype but BF16.
JSON_DATATYPES = [t for t in SAMPLES if t != "BF16"]


def sample_tensor(name: str, datatype: str) -> Tensor:
    """A tensor named `name` holding the sample of `datatype`."""
    sample = SAMPLES[datatype]
    return Tensor(name, datatype, sample.shape, sample)


def assert_tensor(actual: Tensor, expected: Tensor) -> None:
    """Name, datatype, shape, dtype and bytes (elements for BYTES) all match."""
    assert (actual.name, actual.datatype, actual.shape) == (expected.name, expected.datatype, expected.shape)
    assert actual.data.shape == expected.shape
    if expected.datatype == "BYTES":
        assert actual.data.tolist() == expected.data.tolist()
    else:
        assert actual.data.dtype == expected.data.dtype
        assert actual.data.tobytes() == expected.data.tobytes()

"""A TF Serving core without SavedModels: a real ModelManager whose loader builds signatures from Python
functions, so the listeners and the core are tested in-process and in milliseconds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from runtimes.tfserving.config import ModelConfig
from runtimes.tfserving.manager import ModelManager
from runtimes.tfserving.metrics import ServingMetrics
from runtimes.tfserving.model import LoadedVersion, Signature, TensorInfo
from runtimes.tfserving.service import DEFAULT_MAX_REQUEST_BYTES, TFServingCore

MODEL = "m"
# Signatures of the fake model, each "x" -> "y" (`shape` of both; None: unknown rank):
#   serving_default: FP32 [-1, 2] -> y = the row sums, shape [-1]
#   <dtype name>:    identity on that dtype, shape [-1] (ints, bools, strings, complex)
#   strings_bytes:   identity on strings, the output named "y_bytes"
#   slow:            FP32 identity that blocks until `FakeModel.gate` is set
IDENTITY = {
    "ints": types_pb2.DT_INT32,
    "floats": types_pb2.DT_FLOAT,
    "bools": types_pb2.DT_BOOL,
    "strings": types_pb2.DT_STRING,
    "complex": types_pb2.DT_COMPLEX64,
    "bf16": types_pb2.DT_BFLOAT16,
}


class FakeModel:
    """Builds the fake model's versions (the `Loader` the manager calls) and holds the slow gate."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()

    def __call__(self, model: str, version: int, path: Path) -> LoadedVersion:
        signatures = {
            "serving_default": _signature(
                "serving_default",
                TensorInfo("x", types_pb2.DT_FLOAT, (-1, 2)),
                TensorInfo("y", types_pb2.DT_FLOAT, (-1,)),
                lambda x: np.asarray(x.sum(axis=1), np.float32),
            ),
            "strings_bytes": _signature(
                "strings_bytes",
                TensorInfo("x", types_pb2.DT_STRING, (-1,)),
                TensorInfo("y_bytes", types_pb2.DT_STRING, (-1,)),
                lambda x: x,
            ),
            "slow": _signature(
                "slow",
                TensorInfo("x", types_pb2.DT_FLOAT, (-1,)),
                TensorInfo("y", types_pb2.DT_FLOAT, (-1,)),
                self._slow,
            ),
        }
        for key, dtype in IDENTITY.items():
            signatures[key] = _signature(
                key, TensorInfo("x", dtype, (-1,)), TensorInfo("y", dtype, (-1,)), lambda x: x
            )
        defs = {
            key: meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict") for key in signatures
        }
        return LoadedVersion(model, version, path, defs, signatures, saved_model=None)

    def _slow(self, x: np.ndarray) -> np.ndarray:
        self.started.set()
        if not self.gate.wait(10):
            raise TimeoutError("test gate never opened")
        return x


class _Result:
    """What a SavedModel signature's outputs look like to `Signature.run_direct`: `.numpy()`."""

    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def numpy(self) -> np.ndarray:
        return self._value


def _signature(
    key: str, x: TensorInfo, y: TensorInfo, compute: Callable[[np.ndarray], np.ndarray]
) -> Signature:
    def function(**inputs: Any) -> dict[str, _Result]:
        return {y.alias: _Result(compute(inputs["x"]))}

    return Signature(key, (x,), (y,), function)


async def fake_core(
    root: Path, model: FakeModel | None = None, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
) -> TFServingCore:
    """A core serving MODEL version 1 (its version directory is made under `root`)."""
    version_dir = root / MODEL / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "saved_model.pb").write_bytes(b"")  # the fake loader never reads it
    manager = ModelManager(model or FakeModel())
    await manager.apply([ModelConfig(MODEL, root / MODEL)])
    return TFServingCore(manager, ServingMetrics(), threads=2, max_request_bytes=max_request_bytes)

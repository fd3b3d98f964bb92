"""The gateway's own Python per gRPC `ModelInfer`, in process: the servicer, the DataPlane, the v2 gRPC
backend and both codecs, with the backend's network call replaced by a canned answer.

    .venv/bin/python bench/inprocess_path.py [--calls 5000] [--repeats 7] [--checkout DIR]

A 2-row `cnn` request (FP32 [2, 28, 28, 1], raw contents) goes through `InferenceServicer.ModelInfer` as
the gRPC listener would call it, over the DataPlane and `V2Backend` built from a configuration as the
gateway builds them (metadata cached, validation on, metrics recorded); the backend's `ModelInfer` call
answers a serialized 2x10 FP32 response at once. It prints the best of `--repeats` timings of `--calls`
calls, in µs a call. No network, no grpc.aio, no other process: the figure moves with the code, not the
machine's load, though the running gateway pays several times as much per line (cold caches between
requests; `bench/cpu_ratio.py` measures that). To compare two versions, run it in turn with
`--checkout` naming each (the gateway package is imported from there), a few times each, and take the
minimum of each.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ENDPOINT = "127.0.0.1:1"  # never connected to: the call is replaced


class _Context:
    """What the servicer asks of grpc.aio's context on the success path."""

    def time_remaining(self) -> float:
        return 30.0


def _messages() -> tuple[bytes, bytes]:
    from gateway.proto import inference_pb2 as pb

    x = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="cnn")
    request.inputs.add(name="image", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    answer = pb.ModelInferResponse(model_name="cnn", model_version="1")
    answer.outputs.add(name="probabilities", datatype="FP32", shape=[2, 10])
    answer.raw_output_contents.append(np.zeros((2, 10), np.float32).tobytes())
    return request.SerializeToString(), answer.SerializeToString()


async def _run(calls: int, repeats: int) -> float:
    # Imported here, once `main` has put the checkout measured first on the path.
    from gateway.api.grpc.servicer import InferenceServicer
    from gateway.app import build_dataplane
    from gateway.metrics import GatewayMetrics
    from gateway.settings import GatewaySettings
    from gateway.types import ModelMetadata, TensorMetadata

    body, answer = _messages()
    metadata = ModelMetadata(
        "cnn",
        "jax",
        [TensorMetadata("image", "FP32", (-1, 28, 28, 1))],
        [TensorMetadata("probabilities", "FP32", (-1, 10))],
        ["1"],
    )
    settings = GatewaySettings.model_validate(
        {
            "backends": {"jax": {"kind": "v2", "endpoints": [ENDPOINT]}},
            "routes": [{"model": "cnn", "backend": "jax"}],
        }
    )
    plane, _clusters, backends = build_dataplane(settings, GatewayMetrics())
    transport: Any = backends["jax"]._transport  # type: ignore[attr-defined]

    async def canned_call(data: bytes, **_: Any) -> bytes:
        return answer

    async def canned_metadata(name: str, version: str, endpoint: str) -> ModelMetadata:
        return metadata

    transport._infer_calls[ENDPOINT] = canned_call
    transport.model_metadata = canned_metadata
    servicer = InferenceServicer(plane)
    context: Any = _Context()
    for _ in range(1000):  # warm-up: the metadata cache, the metric children
        await servicer.ModelInfer(body, context)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            await servicer.ModelInfer(body, context)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    sys.path.insert(0, str(args.checkout.resolve()))  # the gateway package measured
    per_call = asyncio.run(_run(args.calls, args.repeats))
    print(f"gateway's own path per gRPC ModelInfer, in process: {per_call:.1f} µs (best of {args.repeats})")


if __name__ == "__main__":
    main()

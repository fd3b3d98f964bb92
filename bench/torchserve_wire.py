"""What the gateway's side of one TorchServe gRPC call costs for a large tensor: the hand-framed messages
(`gateway.codecs.torchserve.grpc_wire`) against the generated protobuf classes, in one run.

    .venv/bin/python bench/torchserve_wire.py [--mib 16] [--calls 30]

For an FP32 tensor of `--mib` MiB: the request (payload encoded, then framed as a `PredictionsRequest`)
and the answer (the `prediction` read from a serialized `PredictionResponse`, then the payload decoded
into tensors), each way timed `--calls` times after a warm-up, alternating the two ways; p50s and their
ratio are printed. In process: no network, no TorchServe, only the copies and parsing the gateway does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.codecs.torchserve import grpc_wire, payload
from gateway.proto.torchserve import inference_pb2 as pb
from gateway.types import Tensor


def _p50_ms(work: Callable[[], object], calls: int, timings: list[float]) -> None:
    for _ in range(calls):
        start = time.perf_counter()
        work()
        timings.append((time.perf_counter() - start) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    x = np.random.default_rng(0).random(args.mib * 2**20 // 4, dtype=np.float32)
    tensors = [Tensor("x", "FP32", x.shape, x)]
    reply = pb.PredictionResponse(prediction=payload.encode_response(tensors)).SerializeToString()

    def generated() -> None:
        body = payload.encode_request(tensors)
        pb.PredictionsRequest(model_name="m", input={"data": body}).SerializeToString()
        payload.decode_response(pb.PredictionResponse.FromString(reply).prediction)

    def hand_framed() -> None:
        framed = payload.encode_request_parts(tensors)
        grpc_wire.predictions_request("m", "", "data", framed.parts, framed.size)
        payload.decode_response(grpc_wire.prediction(reply))

    ways = {"generated classes": generated, "hand-framed": hand_framed}
    timings: dict[str, list[float]] = {name: [] for name in ways}
    for work in ways.values():
        work()  # warm-up
    for _ in range(3):  # alternating rounds: drift on a shared machine hits both
        for name, work in ways.items():
            _p50_ms(work, max(args.calls // 3, 1), timings[name])
    p50 = {name: statistics.median(t) for name, t in timings.items()}
    print(
        f"== TorchServe gRPC call, gateway side, {args.mib} MiB FP32 request and answer, p50 of {args.calls}"
    )
    for name, value in p50.items():
        print(f"  {name:18s} {value:8.2f} ms")
    print(f"  hand-framed / generated: {p50['hand-framed'] / p50['generated classes']:.2f}x")


if __name__ == "__main__":
    main()

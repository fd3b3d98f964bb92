"""The load the comparison puts on the gateway: OIP gRPC `ModelInfer` with pre-serialised bytes.

Every framework gets the same request bytes but for `model_version`, which picks it ("" the JAX runtime,
"tfserving", "torchserve"). The client sends bytes through a generic `unary_unary` call (no protobuf
encoding or decoding on the client's side), so its own cost stays small and equal for all three; it
still shares the machine's cores with the gateway and the servers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from gateway.datatypes import datatype_of
from gateway.proto import inference_pb2 as pb

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Target:
    """One framework behind the gateway: its label and the request bytes that reach it."""

    framework: str
    body: bytes


def infer_body(model: str, version: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A serialised `ModelInferRequest` for `model` at `version`, tensors as raw contents."""
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request.SerializeToString()


async def wait_answering(channel: grpc.aio.Channel, target: Target, timeout_s: float) -> None:
    """Call until one call succeeds (a backend just restarted may be refused until the gateway's health
    check sees it again); re-raise the last error after `timeout_s`."""
    call = channel.unary_unary(MODEL_INFER)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await call(target.body, timeout=CALL_TIMEOUT_S)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def latencies(
    channel: grpc.aio.Channel, targets: Sequence[Target], requests: int, warmup: int = 10
) -> dict[str, list[float]]:
    """Concurrency 1: `requests` calls per target, the targets interleaved call by call so each sees the
    same machine; seconds per call."""
    call = channel.unary_unary(MODEL_INFER)
    for target in targets:
        for _ in range(warmup):
            await call(target.body, timeout=CALL_TIMEOUT_S)
    out: dict[str, list[float]] = {t.framework: [] for t in targets}
    for _ in range(requests):
        for target in targets:
            start = time.perf_counter()
            await call(target.body, timeout=CALL_TIMEOUT_S)
            out[target.framework].append(time.perf_counter() - start)
    return out


async def closed_loop(channel: grpc.aio.Channel, target: Target, seconds: float, concurrency: int) -> int:
    """`concurrency` callers, each sending its next call as soon as its last one is answered, for
    `seconds`; the number of calls answered (an error status raises)."""
    call = channel.unary_unary(MODEL_INFER)
    done = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call(target.body, timeout=CALL_TIMEOUT_S)
            done += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done

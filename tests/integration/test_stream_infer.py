"""Triton's bidirectional `ModelStreamInfer`, driven by tritonclient's own stream APIs (sync and asyncio)."""

from __future__ import annotations

import queue
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration


def _images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 28, 28, 1), dtype=np.float32)


def _image_input(module: Any, images: np.ndarray, name: str = "image") -> Any:
    tensor = module.InferInput(name, list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    return tensor


@pytest.mark.parametrize("target", ["gateway", "runtime"])
def test_stream_answers_every_request_and_isolates_a_bad_one(
    target: str, gateway_grpc: str, runtime_grpc: str
) -> None:
    """Many requests in flight on one stream: each answer matches the unary answer for its id; a request
    with a wrong input name is answered with an error naming it and its id, and the stream carries on."""
    url = gateway_grpc if target == "gateway" else runtime_grpc
    batches = {f"req-{i}": _images(1 + i % 3, seed=i) for i in range(24)}
    answers: queue.Queue[tuple[Any, InferenceServerException | None]] = queue.Queue()
    with grpcclient.InferenceServerClient(url) as client:
        expected = {
            rid: client.infer("cnn", [_image_input(grpcclient, x)]).as_numpy("probabilities")
            for rid, x in batches.items()
        }
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for i, (rid, images) in enumerate(batches.items()):
                client.async_stream_infer("cnn", [_image_input(grpcclient, images)], request_id=rid)
                if i == 10:
                    bad = _image_input(grpcclient, images, name="not_image")
                    client.async_stream_infer("cnn", [bad], request_id="bad-1")
            got: dict[str, np.ndarray] = {}
            errors = []
            for _ in range(len(batches) + 1):
                result, error = answers.get(timeout=30)
                if error is not None:
                    errors.append(error.message())
                    continue
                got[result.get_response().id] = result.as_numpy("probabilities")
        finally:
            client.stop_stream()
    assert len(errors) == 1 and errors[0].startswith("[request id: bad-1]") and "not_image" in errors[0]
    assert got.keys() == expected.keys()
    for rid, probabilities in got.items():
        np.testing.assert_allclose(probabilities, expected[rid], rtol=1e-6)


async def test_asyncio_stream_infer_through_gateway(gateway_grpc: str) -> None:
    """tritonclient.grpc.aio's `stream_infer` (an async iterator of requests) gets one answer per request,
    and an unknown model on the stream is an error answer, not a failed stream."""
    names = ["cnn"] * 8 + ["no-such-model"]

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i, model in enumerate(names):
            yield {
                "model_name": model,
                "inputs": [_image_input(aioclient, _images(2, seed=i))],
                "request_id": f"a-{i}",
            }

    async with aioclient.InferenceServerClient(gateway_grpc) as client:
        responses = client.stream_infer(requests(), stream_timeout=30)
        ok, failed = [], []
        async for result, error in responses:
            if error is not None:
                failed.append(error.message())
            else:
                ok.append(result.get_response().id)
            if len(ok) + len(failed) == len(names):
                break
    assert sorted(ok) == sorted(f"a-{i}" for i in range(8))
    assert len(failed) == 1 and "no-such-model" in failed[0] and failed[0].startswith("[request id: a-8]")

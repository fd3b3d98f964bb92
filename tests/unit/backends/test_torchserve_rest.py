"""TorchServeBackend over REST against a fake TorchServe (httpx MockTransport): the payload on the wire,
the inference key on every call and its renewal, metadata from the handler's signature, error mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from gateway.backends.torchserve import TorchServeBackend
from gateway.codecs.torchserve import payload
from gateway.errors import BackendError, ErrorCode, GatewayError
from gateway.settings import TorchServeBackendSettings, TorchServeRouteOptions
from gateway.types import InferenceRequest, RequestedOutput, Tensor

ENDPOINT = "ts:8080"
KEYS = {"management": {"key": "m"}, "API": {"key": "a"}}  # key_file.json's keys beside the inference one
SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


class FakeTorchServe:
    """Doubles `x` into `y` for model "double"; accepts only `key`; records every request."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            body = {"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed"}
            return httpx.Response(400, json=body)
        if request.url.path == "/ping":
            return httpx.Response(200, json={"status": "Healthy"})
        if not request.url.path.startswith("/predictions/double"):
            body = {"code": 404, "type": "ModelNotFoundException", "message": "Model not found: nope"}
            return httpx.Response(404, json=body)
        tensors, _outputs, metadata = payload.parse_request(request.content)
        if metadata:
            return httpx.Response(200, content=json.dumps(SIGNATURE).encode())
        if tensors[0].name != "x":
            return httpx.Response(400, content=payload.error_body(400, "InvalidRequest", "no input 'x'"))
        x = tensors[0]
        return httpx.Response(
            200, content=payload.encode_response([Tensor("y", "FP32", x.shape, x.data * 2)])
        )


def backend(fake: Callable[[httpx.Request], httpx.Response], **settings: str) -> TorchServeBackend:
    config = TorchServeBackendSettings(kind="torchserve", protocol="rest", endpoints=[ENDPOINT], **settings)  # type: ignore[arg-type]
    return TorchServeBackend("ts", config, http_transport=httpx.MockTransport(fake))


def request(name: str = "x", model: str = "double") -> InferenceRequest:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    return InferenceRequest(model, [Tensor(name, "FP32", x.shape, x)], outputs=[RequestedOutput("y")], id="r")


async def test_infer_sends_the_payload_with_the_key() -> None:
    """The body is the binary payload, the key is a Bearer header, the answer decodes."""
    fake = FakeTorchServe("k1")
    client = backend(fake, inference_key="k1")
    response = await client.infer(request(), ENDPOINT, 5.0, options=TorchServeRouteOptions(version="2.0"))
    sent = fake.seen[-1]
    assert sent.url.path == "/predictions/double/2.0"
    assert sent.headers["content-type"] == payload.CONTENT_TYPE
    assert payload.parse_request(sent.content)[1] == ("y",)
    assert response.outputs[0].data.tolist() == [[0, 2, 4], [6, 8, 10]]
    assert (response.model_version, response.id) == ("2.0", "r")
    await client.close()


async def test_a_renewed_key_is_read_again_after_a_refusal(tmp_path: Path) -> None:
    """TorchServe refuses the old key: the key file is read again and the call retried once."""
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({**KEYS, "inference": {"key": "old"}}))
    fake = FakeTorchServe("old")
    client = backend(fake, inference_key_file=str(key_file))
    await client.infer(request(), ENDPOINT, 5.0)
    fake.key = "renewed"
    key_file.write_text(json.dumps({**KEYS, "inference": {"key": "renewed"}}))
    await client.infer(request(), ENDPOINT, 5.0)
    assert [r.headers["authorization"] for r in fake.seen] == ["Bearer old", "Bearer old", "Bearer renewed"]
    fake.key = "unknown to the gateway"
    with pytest.raises(BackendError, match="refused the gateway's inference key"):
        await client.infer(request(), ENDPOINT, 5.0)
    await client.close()


async def test_metadata_readiness_and_errors() -> None:
    """The signature is the metadata; readiness is the query answered; a handler's 400 is the client's;
    an unknown model is NOT_FOUND; Ping is the server's readiness."""
    client = backend(FakeTorchServe("k"), inference_key="k")
    metadata = await client.model_metadata("double", "", ENDPOINT)
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", (-1, 3))]
    assert metadata.platform == "pytorch_torchserve"
    assert await client.model_ready("double", "", ENDPOINT) is True
    with pytest.raises(GatewayError) as bad:
        await client.infer(request(name="z"), ENDPOINT, 5.0)
    assert bad.value.code is ErrorCode.INVALID_ARGUMENT and "no input 'x'" in bad.value.message
    with pytest.raises(GatewayError) as missing:
        await client.model_ready("nope", "", ENDPOINT)
    assert missing.value.code is ErrorCode.NOT_FOUND
    assert await client.ready(ENDPOINT) is True
    await client.close()
    assert await backend(FakeTorchServe("k"), inference_key="wrong").ready(ENDPOINT) is False


class BusyTorchServe(FakeTorchServe):
    """A model whose queue holds a metadata query past the probe's time (`hold_s`), or that has no worker."""

    def __init__(self, *, hold_s: float = 0.0, healthy: bool = True, workers: bool = True) -> None:
        super().__init__("k")
        self.hold_s, self.healthy, self.workers = hold_s, healthy, workers

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ping":
            status = "Healthy" if self.healthy else "Unhealthy"
            return httpx.Response(200 if self.healthy else 500, json={"status": status})
        if not self.workers:
            message = 'Model "double" has no worker to serve inference request.'
            body = {"code": 503, "type": "ServiceUnavailableException", "message": message}
            return httpx.Response(503, json=body)
        await asyncio.sleep(self.hold_s)
        return self(request)


@pytest.mark.parametrize(
    ("busy", "expected"),
    [
        (BusyTorchServe(hold_s=5.0), True),
        (BusyTorchServe(hold_s=5.0, healthy=False), False),
        (BusyTorchServe(workers=False), False),
    ],
    ids=["queued-and-healthy", "queued-but-unhealthy", "no-worker"],
)
async def test_a_busy_model_is_ready_and_one_without_workers_is_not(
    busy: BusyTorchServe, expected: bool
) -> None:
    """A metadata query still queued when the probe's time is up (TorchServe queues only for a model with
    workers) reads as ready if Ping says Healthy, within the probe's time, not after the queue drains; a
    model with no worker (refused at once) is not ready."""
    config = TorchServeBackendSettings(
        kind="torchserve",
        protocol="rest",
        endpoints=[ENDPOINT],
        inference_key="k",
        health_check_timeout_s=0.2,
    )  # type: ignore[arg-type]
    client = TorchServeBackend("ts", config, http_transport=httpx.MockTransport(busy.handle))
    started = asyncio.get_running_loop().time()
    assert await client.model_ready("double", "", ENDPOINT) is expected
    assert asyncio.get_running_loop().time() - started < 2.0
    await client.close()


async def test_concurrent_refusals_all_retry_with_the_renewed_key(tmp_path: Path) -> None:
    """Many calls refused at once after a renewal: each retries with the key read again, none is a 502
    (only the first call's refresh sees the file change; the others see a key different from theirs)."""
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({**KEYS, "inference": {"key": "old"}}))
    fake = FakeTorchServe("old")
    client = backend(fake, inference_key_file=str(key_file))
    await client.infer(request(), ENDPOINT, 5.0)
    fake.key = "renewed"
    key_file.write_text(json.dumps({**KEYS, "inference": {"key": "renewed"}}))
    answers = await asyncio.gather(*(client.infer(request(), ENDPOINT, 5.0) for _ in range(5)))
    assert len(answers) == 5
    await client.close()


async def test_a_full_queue_sheds_load_and_a_failed_prediction_is_the_models() -> None:
    """TorchServe's 503s: ServiceUnavailableException is RESOURCE_EXHAUSTED (moved elsewhere, not ejected),
    InternalServerException ('Prediction failed') the model's failure; neither reads as 'endpoint down'."""

    def busy(kind: str) -> Callable[[httpx.Request], httpx.Response]:
        return lambda _: httpx.Response(503, json={"code": 503, "type": kind, "message": "x"})

    shed = backend(busy("ServiceUnavailableException"), inference_key="k")
    with pytest.raises(GatewayError) as overloaded:
        await shed.infer(request(), ENDPOINT, 5.0)
    assert overloaded.value.code is ErrorCode.RESOURCE_EXHAUSTED
    failed = backend(busy("InternalServerException"), inference_key="k")
    with pytest.raises(BackendError, match="the model failed"):
        await failed.infer(request(), ENDPOINT, 5.0)


@pytest.mark.parametrize(
    ("body", "ready"),
    [({"status": "Healthy"}, True), ({"status": "Partial Healthy"}, False), ({"status": "Unhealthy"}, False)],
)
async def test_ping_is_ready_only_when_exactly_healthy(body: dict[str, str], ready: bool) -> None:
    """Ping reads ready only for the status "Healthy" itself (older TorchServe answered 200 with
    "Partial Healthy")."""
    client = backend(lambda request: httpx.Response(200, json=body), inference_key="k")
    assert await client.ready(ENDPOINT) is ready
    await client.close()

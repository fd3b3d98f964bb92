"""V2Backend over REST: binary tensor round trip and HTTP status mapping, on an httpx mock transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from gateway.backends.v2 import V2Backend
from gateway.codecs.v2 import rest as codec
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    InvalidRequest,
)
from gateway.settings import TFServingBackendSettings, V2BackendSettings
from gateway.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

ENDPOINT = "model-server:8000"
Handler = Callable[[httpx.Request], httpx.Response]


def settings(*endpoints: str, binary_data: bool = True) -> V2BackendSettings:
    return V2BackendSettings(
        kind="v2", protocol="rest", endpoints=list(endpoints or [ENDPOINT]), binary_data=binary_data
    )


def request(model: str = "double") -> InferenceRequest:
    x = np.array([[1, 2, 3]], dtype=np.float32)
    return InferenceRequest(model, [Tensor("x", "FP32", x.shape, x)], model_version="1")


def backend(handler: Handler, *, binary_data: bool = True) -> V2Backend:
    return V2Backend("tf", settings(binary_data=binary_data), http_transport=httpx.MockTransport(handler))


def double_server(seen: list[httpx.Request]) -> Handler:
    """An OIP REST server that doubles `x`, decoding and encoding with the project's server-side codec."""

    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        header = req.headers.get(codec.HEADER_LENGTH)
        decoded = codec.decode_infer_request(
            req.content, None if header is None else int(header), "double", "1"
        )
        x = decoded.inputs[0].data
        response = InferenceResponse("double", [Tensor("y", "FP32", x.shape, x * 2)], "1")
        body, length = codec.encode_infer_response(response, decoded)
        headers = {} if length is None else {codec.HEADER_LENGTH: str(length)}
        return httpx.Response(200, content=body, headers=headers)

    return handle


async def test_infer_binary_both_ways() -> None:
    """Inputs go as binary blobs, outputs are asked binary, and the framed response decodes."""
    seen: list[httpx.Request] = []
    client = backend(double_server(seen))
    try:
        response = await client.infer(request(), ENDPOINT, 5.0)
    finally:
        await client.close()
    assert response.outputs[0].data.tolist() == [[2, 4, 6]]
    sent = seen[0]
    assert str(sent.url) == f"http://{ENDPOINT}/v2/models/double/versions/1/infer"
    assert sent.headers["content-type"] == "application/octet-stream"
    header_length = int(sent.headers[codec.HEADER_LENGTH])
    assert orjson.loads(sent.content[:header_length])["parameters"]["binary_data_output"] is True


def json_only_server(seen: list[httpx.Request]) -> Handler:
    """An OIP REST server without the binary extension (like MLServer): it reads `data` lists only and
    answers JSON; a framed body gets the plain-text 500 MLServer 1.7.1 answers (its handler of the
    validation error fails on a body that is not a JSON object)."""

    def handle(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        try:
            doc = orjson.loads(req.content)
        except orjson.JSONDecodeError:
            return httpx.Response(500, content=b"Internal Server Error")
        x = np.asarray(doc["inputs"][0]["data"], dtype=np.float32).reshape(doc["inputs"][0]["shape"])
        answer = {
            "model_name": "double",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": list(x.shape), "data": (x * 2).ravel()}],
        }
        return httpx.Response(200, content=orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY))

    return handle


def test_binary_data_is_on_by_default_and_a_v2_option_only() -> None:
    """Without the option the REST transport speaks the binary extension, as Triton and our runtime do;
    other backend kinds do not take it."""
    assert V2BackendSettings(kind="v2", endpoints=[ENDPOINT]).binary_data is True
    with pytest.raises(ValidationError, match="binary_data"):
        TFServingBackendSettings(kind="tfserving", endpoints=[ENDPOINT], binary_data=False)  # type: ignore[call-arg]


async def test_infer_json_both_ways_without_the_binary_extension() -> None:
    """With `binary_data: false` the body is plain JSON with `data` lists, no binary output is asked
    for (no `binary_data_output`, no header length), and the JSON answer decodes."""
    seen: list[httpx.Request] = []
    client = backend(json_only_server(seen), binary_data=False)
    try:
        response = await client.infer(request(), ENDPOINT, 5.0)
    finally:
        await client.close()
    assert response.outputs[0].data.tolist() == [[2, 4, 6]]
    sent = seen[0]
    assert sent.headers["content-type"] == "application/json"
    assert codec.HEADER_LENGTH not in sent.headers
    body = orjson.loads(sent.content)
    assert "parameters" not in body
    assert body["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]


async def test_client_framing_parameters_are_not_forwarded_as_json() -> None:
    """A client's own `binary_data_output` and per-output `binary_data` do not reach a JSON-only backend."""
    seen: list[httpx.Request] = []
    client = backend(json_only_server(seen), binary_data=False)
    x = request().inputs
    outputs = [RequestedOutput("y", {"binary_data": True})]
    asked = InferenceRequest(
        "double", x, "1", outputs=outputs, parameters={"binary_data_output": True, "p": 1}
    )
    try:
        await client.infer(asked, ENDPOINT, 5.0)
    finally:
        await client.close()
    body = orjson.loads(seen[0].content)
    assert body["parameters"] == {"p": 1}
    assert body["outputs"] == [{"name": "y"}]


async def test_a_tensor_json_cannot_carry_is_refused_without_the_binary_extension() -> None:
    """BF16 has no JSON form: with `binary_data: false` the request is refused before it is sent."""
    seen: list[httpx.Request] = []
    client = backend(json_only_server(seen), binary_data=False)
    raw = np.zeros((1, 3), dtype=np.uint16)
    try:
        with pytest.raises(InvalidRequest, match="binary_data: false"):
            await client.infer(InferenceRequest("double", [Tensor("x", "BF16", (1, 3), raw)]), ENDPOINT, 5.0)
    finally:
        await client.close()
    assert seen == []


async def test_the_binary_extension_toward_a_json_only_server_fails_cleanly() -> None:
    """Left on toward a server without the extension, the server's refusal becomes a gateway error."""
    seen: list[httpx.Request] = []
    client = backend(json_only_server(seen))
    try:
        with pytest.raises(GatewayError) as info:
            await client.infer(request(), ENDPOINT, 5.0)
    finally:
        await client.close()
    assert seen[0].headers["content-type"] == "application/octet-stream"
    assert info.value.code is ErrorCode.BAD_GATEWAY
    assert info.value.message == "backend 'tf' answered HTTP 500"


def status(code: int, body: bytes) -> Handler:
    return lambda _: httpx.Response(code, content=body)


@pytest.mark.parametrize(
    ("handler", "code", "message"),
    [
        (status(400, b'{"error": "input \'x\' is bad"}'), ErrorCode.INVALID_ARGUMENT, "input 'x' is bad"),
        (
            status(404, b'{"error": "model \'double\' not found"}'),
            ErrorCode.NOT_FOUND,
            "model 'double' not found",
        ),
        (status(429, b'{"error": "queue full"}'), ErrorCode.RESOURCE_EXHAUSTED, "queue full"),
        (status(503, b'{"error": "at 10.1.2.3"}'), ErrorCode.UNAVAILABLE, "backend 'tf' unavailable"),
        (status(504, b""), ErrorCode.DEADLINE_EXCEEDED, "backend 'tf' did not answer"),
        (
            status(500, b'{"error": "Traceback: secret"}'),
            ErrorCode.BAD_GATEWAY,
            "backend 'tf' answered HTTP 500",
        ),
        (status(400, b"<html>nginx</html>"), ErrorCode.BAD_GATEWAY, "backend 'tf' answered HTTP 400"),
        (status(200, b"not json"), ErrorCode.BAD_GATEWAY, "backend 'tf': unreadable"),
    ],
    ids=["400", "404", "429", "503", "504", "500", "400-unreadable", "200-garbage"],
)
async def test_http_errors_are_mapped(handler: Handler, code: ErrorCode, message: str) -> None:
    """Statuses map to the ErrorCode table; OIP `error` messages pass through only for client errors."""
    client = backend(handler)
    try:
        with pytest.raises(GatewayError) as info:
            await client.infer(request(), ENDPOINT, 5.0)
    finally:
        await client.close()
    assert info.value.code is code
    assert info.value.message.startswith(message)
    assert "secret" not in info.value.message and "10.1.2.3" not in info.value.message


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), BackendUnavailable),
        (httpx.ConnectTimeout("connect timed out"), BackendUnavailable),
        (httpx.ReadTimeout("read timed out"), DeadlineExceeded),
        (httpx.RemoteProtocolError("server disconnected"), BackendUnavailable),
        (httpx.DecodingError("bad gzip"), BackendError),
    ],
)
async def test_transport_errors_are_mapped(exc: Exception, expected: type[GatewayError]) -> None:
    """httpx exceptions become gateway errors at the backend boundary, without their text."""

    def fail(_: httpx.Request) -> httpx.Response:
        raise exc

    client = backend(fail)
    try:
        with pytest.raises(expected) as info:
            await client.infer(request(), ENDPOINT, 5.0)
    finally:
        await client.close()
    assert str(exc) not in info.value.message


async def test_connection_refused_for_real(dead_address: str) -> None:
    """With the real network and nothing listening, infer is UNAVAILABLE and the probe is False."""
    client = V2Backend("tf", settings(dead_address))
    try:
        with pytest.raises(BackendUnavailable, match="backend 'tf' unavailable"):
            await client.infer(request(), dead_address, 2.0)
        assert await client.ready(dead_address) is False
    finally:
        await client.close()


async def test_health_metadata_and_model_ready_by_status() -> None:
    """Readiness is judged by status code; metadata and config JSON are read by the codec."""
    metadata = {
        "name": "double",
        "platform": "fake",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    }
    config = {
        "name": "double",
        "max_batch_size": 4,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}],
    }

    def handle(req: httpx.Request) -> httpx.Response:
        path = req.url.path
        routes = {
            "/v2/health/ready": httpx.Response(200),
            "/v2/models/double": httpx.Response(200, content=orjson.dumps(metadata)),
            "/v2/models/double/config": httpx.Response(200, content=orjson.dumps(config)),
            "/v2/models/double/ready": httpx.Response(200, content=b'{"ready": true}'),
            "/v2/models/cold/ready": httpx.Response(503, content=b'{"ready": false}'),
        }
        return routes.get(path, httpx.Response(404, content=b'{"error": "no such model"}'))

    client = backend(handle)
    try:
        assert await client.ready(ENDPOINT) is True
        assert (await client.model_metadata("double", "", ENDPOINT)).inputs[0].shape == (-1, 3)
        assert (await client.batching("double", "", ENDPOINT)).max_batch_size == 4
        assert await client.model_ready("double", "", ENDPOINT) is True
        assert await client.model_ready("cold", "", ENDPOINT) is False
        with pytest.raises(GatewayError) as info:  # 404: unknown here, as over gRPC
            await client.model_ready("gone", "", ENDPOINT)
        assert info.value.code is ErrorCode.NOT_FOUND
        with pytest.raises(GatewayError) as info:
            await client.model_metadata("gone", "", ENDPOINT)
        assert info.value.code is ErrorCode.NOT_FOUND
    finally:
        await client.close()


async def test_a_backend_trickling_its_answer_is_cut_at_the_deadline() -> None:
    """httpx's timeout bounds each read, not the exchange: the REST transport itself answers
    DEADLINE_EXCEEDED when the time left runs out (the DataPlane arms no timer of its own)."""

    async def slow(req: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    client = V2Backend("tf", settings(), http_transport=httpx.MockTransport(slow))
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            await client.infer(request(), ENDPOINT, 0.2)
        assert time.monotonic() - started < 2
    finally:
        await client.close()

"""TorchServe's inference API on the REST listener (`create_app(torchserve=True)`), driven in-process over
ASGI with the project's tensor payload."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest

from gateway.api import torchserve as torchserve_api
from gateway.api.admission import InFlightLimit
from gateway.api.rest.app import create_app
from gateway.codecs.torchserve import payload
from gateway.errors import ErrorCode
from gateway.types import InferenceRequest, InferenceResponse, RequestContext, Tensor
from tests.unit.api.test_tfserving_rest import TFServer

X = np.arange(2, dtype=np.float32)
BODY = payload.encode_request([Tensor("x", "FP32", X.shape, X)])
OCTETS = {"content-type": payload.CONTENT_TYPE}
SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
}


@dataclass
class TorchServer(TFServer):
    """The TF Serving fronts' fake model `m`, whose readiness is `healthy` and which records each
    inference request it is given."""

    healthy: bool = True
    requests: list[InferenceRequest] = field(default_factory=list)

    async def ready(self) -> bool:
        return self.healthy

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
        self.requests.append(request)
        return await super().infer(request, context)


def _client(
    server: TorchServer, max_request_bytes: int = 1 << 20, max_in_flight: int = 0
) -> httpx.AsyncClient:
    app = create_app(
        server, max_request_bytes=max_request_bytes, limit=InFlightLimit(max_in_flight), torchserve=True
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.mark.parametrize(
    ("path", "version"), [("/predictions/m", ""), ("/predictions/m/7", "7")], ids=["no-version", "version"]
)
async def test_predictions_answer_the_response_payload(path: str, version: str) -> None:
    """The answer is the response payload of the model's outputs, the version is passed on, and the call
    is counted once with its wire sizes."""
    server = TorchServer()
    async with _client(server) as client:
        reply = await client.post(path, content=BODY, headers=OCTETS)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == payload.CONTENT_TYPE
    [y] = payload.decode_response(reply.content)
    assert (y.name, y.datatype, y.shape) == ("y", "FP32", (4,))
    [request] = server.requests
    assert request.model_version == version and request.outputs is None
    np.testing.assert_array_equal(request.inputs[0].data, X)
    assert server.rejected == [] and server.transfers == [(len(BODY), len(reply.content))]


async def test_requested_outputs_are_passed_on() -> None:
    """The payload's `outputs` become the request's requested outputs."""
    server = TorchServer()
    body = payload.encode_request([Tensor("x", "FP32", X.shape, X)], outputs=["y"])
    async with _client(server) as client:
        assert (await client.post("/predictions/m", content=body)).status_code == 200
    [request] = server.requests
    assert [o.name for o in request.outputs or []] == ["y"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        OCTETS,
        {"content-type": "application/x-www-form-urlencoded"},
        {"content-type": "text/plain; charset=utf-8"},
        {**OCTETS, "authorization": "Bearer some-torchserve-key"},
    ],
    ids=["none", "octet-stream", "curl-default-form", "text", "bearer-key"],
)
async def test_body_is_taken_as_is(headers: dict[str, str]) -> None:
    """Whatever the Content-Type (or none), the body is the payload; a bearer key is accepted, ignored."""
    async with _client(TorchServer()) as client:
        reply = await client.post("/predictions/m", content=BODY, headers=headers)
    assert reply.status_code == 200, reply.text


async def test_compressed_body() -> None:
    """A gzip-encoded body is decoded as the OIP listener decodes one."""
    async with _client(TorchServer()) as client:
        headers = {**OCTETS, "content-encoding": "gzip"}
        reply = await client.post("/predictions/m", content=gzip.compress(BODY), headers=headers)
    assert reply.status_code == 200, reply.text


async def test_metadata_query_answers_the_signature() -> None:
    """A metadata query answers the model's OIP metadata as a signature's JSON; it is not an inference
    (nothing run, nothing counted)."""
    server = TorchServer()
    async with _client(server) as client:
        reply = await client.post("/predictions/m/3", content=payload.encode_metadata_request())
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == SIGNATURE
    assert ("m", "3") in server.asked
    assert server.requests == [] and server.rejected == [] and server.transfers == []


MULTIPART = {"content-type": "multipart/form-data; boundary=b"}
QUERY = payload.encode_metadata_request()
ERRORS = [
    ("POST", "/predictions/nope", BODY, {}, 404, "ModelNotFoundException", "model 'nope' not found"),
    ("POST", "/predictions/nope", QUERY, {}, 404, "ModelNotFoundException", "model 'nope' not found"),
    ("POST", "/predictions/m", b"junk", {}, 400, "BadRequestException", "request payload: 4 bytes"),
    ("POST", "/predictions/m", b"GWT1\x02\x00\x00\x00{}", {}, 400, "BadRequestException", "list 'inputs'"),
    ("POST", "/predictions/m", BODY, MULTIPART, 400, "BadRequestException", "multipart bodies"),
    ("POST", "/predictions/m", BODY, {"content-encoding": "br"}, 400, "BadRequestException", "'br'"),
    ("POST", "/predictions", BODY, {}, 404, "ResourceNotFoundException", "no such endpoint"),
    ("POST", "/predictions/", BODY, {}, 404, "ResourceNotFoundException", "no such endpoint"),
    ("POST", "/predictions/m/1/x", BODY, {}, 404, "ResourceNotFoundException", "no such endpoint"),
    ("GET", "/predictions/m", b"", {}, 405, "MethodNotAllowedException", "method GET not allowed"),
    ("POST", "/ping", b"", {}, 405, "MethodNotAllowedException", "method POST not allowed on /ping"),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "kind", "message"), ERRORS)
async def test_errors_are_torchserve_bodies(
    method: str, path: str, body: bytes, headers: dict[str, str], status: int, kind: str, message: str
) -> None:
    """Every error is TorchServe's `{"code", "type", "message"}` with its HTTP status."""
    async with _client(TorchServer()) as client:
        reply = await client.request(method, path, content=body, headers=headers)
    assert reply.status_code == status
    doc = reply.json()
    assert set(doc) == {"code", "type", "message"}
    assert (doc["code"], doc["type"]) == (status, kind)
    assert message in doc["message"]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (ErrorCode.INVALID_ARGUMENT, 400, "BadRequestException"),
        (ErrorCode.FAILED_PRECONDITION, 400, "BadRequestException"),
        (ErrorCode.NOT_FOUND, 404, "ModelNotFoundException"),
        (ErrorCode.PAYLOAD_TOO_LARGE, 413, "BadRequestException"),
        (ErrorCode.RESOURCE_EXHAUSTED, 503, "ServiceUnavailableException"),
        (ErrorCode.UNAVAILABLE, 503, "ServiceUnavailableException"),
        (ErrorCode.BAD_GATEWAY, 503, "InternalServerException"),
        (ErrorCode.INTERNAL, 500, "InternalServerException"),
        (ErrorCode.DEADLINE_EXCEEDED, 504, "InternalServerException"),
        (ErrorCode.UNIMPLEMENTED, 501, "InternalServerException"),
    ],
)
def test_error_table(code: ErrorCode, status: int, kind: str) -> None:
    """The one table's statuses, but for TorchServe's 503 on overload and on a failed prediction."""
    assert torchserve_api.error_status(code) == (status, kind)


@pytest.mark.parametrize(
    ("body", "headers"), [(b"junk", {}), (BODY, MULTIPART)], ids=["undecodable", "multipart"]
)
async def test_refused_predictions_are_counted_once(body: bytes, headers: dict[str, str]) -> None:
    """A call refused before inference is reported once under the TorchServe protocol label."""
    server = TorchServer()
    async with _client(server) as client:
        await client.post("/predictions/m", content=body, headers=headers)
    assert server.rejected == [("m", "torchserve_rest", "INVALID_ARGUMENT")]
    assert not server.called.is_set()


async def test_unexpected_failure_before_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception no code expects while decoding is 500 in opaque words, counted once as INTERNAL."""

    def broken(body: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(payload, "parse_request", broken)
    server = TorchServer()
    async with _client(server) as client:
        reply = await client.post("/predictions/m", content=BODY)
    assert reply.status_code == 500
    assert reply.json() == {"code": 500, "type": "InternalServerException", "message": "internal error"}
    assert server.rejected == [("m", "torchserve_rest", "INTERNAL")]


async def test_answer_that_cannot_be_written_is_internal() -> None:
    """A server's answer no payload can hold (a BYTES element that is a number) is the gateway's 500."""
    server = TorchServer(answer=[Tensor("y", "BYTES", (1,), np.array([7], dtype=object))])
    async with _client(server) as client:
        reply = await client.post("/predictions/m", content=BODY)
    assert reply.status_code == 500 and reply.json()["message"] == "internal error"


async def test_backend_failure_is_503() -> None:
    """A backend's unreadable answer (BAD_GATEWAY, 502 for OIP) is 503, as TorchServe's failed predictions."""
    async with _client(TorchServer(fail=True)) as client:
        reply = await client.post("/predictions/m", content=BODY)
    doc = reply.json()
    assert reply.status_code == 503
    assert doc["type"] == "InternalServerException" and "answered nonsense" in doc["message"]


async def test_limits_are_the_listeners() -> None:
    """The body limit (413) and the in-flight limit (503, TorchServe's full queue) hold for predictions."""
    async with _client(TorchServer(), max_request_bytes=8) as client:
        assert (await client.post("/predictions/m", content=BODY)).status_code == 413
    server = TorchServer(delay_s=0.3)
    async with _client(server, max_in_flight=1) as client:
        first = asyncio.ensure_future(client.post("/predictions/m", content=BODY))
        await asyncio.wait_for(server.called.wait(), 5)
        busy = await client.post("/predictions/m", content=BODY)
        assert busy.status_code == 503 and "max_in_flight 1" in busy.json()["message"]
        assert busy.json()["type"] == "ServiceUnavailableException"
        assert (await first).status_code == 200
    assert ("m", "torchserve_rest", "RESOURCE_EXHAUSTED") in server.rejected


@pytest.mark.parametrize(("healthy", "status", "word"), [(True, 200, "Healthy"), (False, 500, "Unhealthy")])
async def test_ping(healthy: bool, status: int, word: str) -> None:
    """`GET /ping` is TorchServe's `{"status": "Healthy"}` while the server is ready, else its 500."""
    async with _client(TorchServer(healthy=healthy)) as client:
        reply = await client.get("/ping")
    assert reply.status_code == status and reply.json() == {"status": word}


async def test_oip_routes_are_untouched() -> None:
    """The OIP endpoints and their 404 still answer beside the TorchServe ones, and without the flag
    `/predictions` is the OIP listener's plain 404."""
    async with _client(TorchServer()) as client:
        assert (await client.get("/v2/models/m/ready")).status_code == 200
        assert (await client.get("/v2/nothing")).json()["error"].startswith("no such endpoint")
    app = create_app(TorchServer())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
        reply = await client.post("/predictions/m", content=BODY)
    assert reply.status_code == 404 and set(orjson.loads(reply.content)) == {"error"}

"""TF Serving's REST API on the REST listener (`create_app(tfserving=True)`), driven in-process over ASGI."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson
import pytest

from gateway.api.admission import InFlightLimit
from gateway.api.rest.app import create_app
from gateway.errors import BackendError, ModelNotFound
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestContext,
    Tensor,
    TensorMetadata,
)
from tests.unit.api.fakes import METADATA, FakeServer

ROW = orjson.dumps({"instances": [1.0, 2.0]})


@dataclass
class TFServer(FakeServer):
    """The fake model `m` (input x, output y: FP32 vectors, unless `metadata` says otherwise) that knows
    no other model; `fail` makes inference fail as an unreadable backend answer does, `answer` replaces
    the model's outputs, `broken` makes metadata raise an unexpected exception. `asked` records the
    (model, version) of each status and metadata call."""

    model_is_ready: bool = True
    fail: bool = False
    metadata: ModelMetadata = field(default_factory=lambda: METADATA)
    answer: list[Tensor] | None = None
    broken: bool = False
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def model_ready(self, name: str, version: str = "") -> bool:
        self.asked.append((name, version))
        if name != "m":
            raise ModelNotFound(name, version)
        return self.model_is_ready

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        self.asked.append((name, version))
        if self.broken:
            raise RuntimeError("a bug")
        if name != "m":
            raise ModelNotFound(name, version)
        return self.metadata

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
        if request.model_name != "m":
            raise ModelNotFound(request.model_name, request.model_version)
        if self.fail:
            raise BackendError("backend 'b' answered nonsense")
        response = await super().infer(request, context)
        if self.answer is not None:
            response.outputs = self.answer
        return response


def _client(
    server: FakeServer, max_request_bytes: int = 1 << 20, max_in_flight: int = 0
) -> httpx.AsyncClient:
    app = create_app(
        server, max_request_bytes=max_request_bytes, limit=InFlightLimit(max_in_flight), tfserving=True
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.mark.parametrize(
    ("body", "key"),
    [(ROW, "predictions"), (orjson.dumps({"inputs": {"x": [1.0]}}), "outputs")],
    ids=["row", "columnar"],
)
async def test_predict_answers_in_the_request_format(body: bytes, key: str) -> None:
    """Row requests get `predictions`, columnar ones `outputs`; one call counted with its wire sizes."""
    server = TFServer()
    async with _client(server) as client:
        reply = await client.post("/v1/models/m:predict", content=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {key: [0.0, 0.0, 0.0, 0.0]}
    assert server.rejected == [] and server.transfers == [(len(body), len(reply.content))]


@pytest.mark.parametrize(
    "path", ["/v1/models/m", "/v1/models/m/versions/3", "/v1/models/m/labels/stable", "/V1/MODELS/m"]
)
async def test_status(path: str) -> None:
    """GetModelStatus JSON for every path form, matched case-insensitively as TF Serving does."""
    async with _client(TFServer()) as client:
        reply = await client.get(path)
    assert reply.status_code == 200, reply.text
    [status] = reply.json()["model_version_status"]
    assert status["version"] == ("3" if "versions" in path else "0")  # the fake lists no versions
    assert status["state"] == "AVAILABLE"


async def test_status_of_a_model_not_ready() -> None:
    """A routed model that is not ready is reported with its reason, not as an HTTP error."""
    async with _client(TFServer(model_is_ready=False)) as client:
        reply = await client.get("/v1/models/m")
    [status] = reply.json()["model_version_status"]
    assert status["state"] == "UNKNOWN" and status["status"]["error_code"] == "UNAVAILABLE"


async def test_metadata() -> None:
    """`/metadata` is GetModelMetadataResponse's JSON with the serving_default signature."""
    async with _client(TFServer()) as client:
        reply = await client.get("/v1/models/m/versions/2/metadata")
    doc = reply.json()
    assert doc["model_spec"] == {"name": "m", "version": "2", "signature_name": ""}
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["y"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]


ERRORS = [
    ("GET", "/v1/models", b"", 400, "Malformed request: GET /v1/models"),
    ("GET", "/v1/models/m/versions/one", b"", 400, "Malformed request"),
    ("GET", "/v1/models/m/labels/a-b", b"", 400, "Malformed request"),
    ("GET", "/v1/models/m:predict", b"", 400, "Malformed request"),
    ("POST", "/v1/models/m", ROW, 400, "Malformed request: POST"),
    ("POST", "/v1/models/m:classify", b"{}", 501, "classify is not supported"),
    ("GET", "/v1/models/nope", b"", 404, "model 'nope' not found"),
    ("POST", "/v1/models/nope:predict", ROW, 404, "model 'nope' not found"),
    ("POST", "/v1/models/m:predict", b'{"instances": ["a"]}', 400, "input 'x'"),
    ("POST", "/v1/models/m:predict", b"{", 400, "JSON Parse error"),
    (
        "POST",
        "/v1/models/m:predict",
        b'{"signature_name": "other", "inputs": [1.0]}',
        400,
        'Serving signature key "other" not found.',
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), ERRORS)
async def test_errors_are_tf_serving_bodies(
    method: str, path: str, body: bytes, status: int, message: str
) -> None:
    """Every error is `{"error": ...}` with TF Serving's HTTP status."""
    async with _client(TFServer()) as client:
        reply = await client.request(method, path, content=body)
    assert reply.status_code == status
    assert message in reply.json()["error"]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"{", "INVALID_ARGUMENT"), (b'{"signature_name": "s", "inputs": [1.0]}', "FAILED_PRECONDITION")],
    ids=["undecodable", "unknown-signature"],
)
async def test_refused_predict_is_counted_once(body: bytes, code: str) -> None:
    """A predict refused before inference is reported once under the TF Serving protocol label."""
    server = TFServer()
    async with _client(server) as client:
        await client.post("/v1/models/m:predict", content=body)
    assert server.rejected == [("m", "tfserving_rest", code)]
    assert not server.called.is_set()


async def test_backend_failure_is_503() -> None:
    """A backend's unreadable answer (BAD_GATEWAY, 502 for OIP) is 503: TF Serving has no 502."""
    async with _client(TFServer(fail=True)) as client:
        reply = await client.post("/v1/models/m:predict", content=ROW)
    assert reply.status_code == 503 and "answered nonsense" in reply.json()["error"]


async def test_limits_are_the_listeners() -> None:
    """The body limit (413) and the in-flight limit (429) hold for predict as for OIP inference."""
    async with _client(TFServer(), max_request_bytes=8) as client:
        assert (await client.post("/v1/models/m:predict", content=ROW)).status_code == 413
    server = TFServer(delay_s=0.3)
    async with _client(server, max_in_flight=1) as client:
        first = asyncio.ensure_future(client.post("/v1/models/m:predict", content=ROW))
        await asyncio.wait_for(server.called.wait(), 5)
        busy = await client.post("/v1/models/m:predict", content=ROW)
        assert busy.status_code == 429 and "max_in_flight 1" in busy.json()["error"]
        assert (await first).status_code == 200
    assert ("m", "tfserving_rest", "RESOURCE_EXHAUSTED") in server.rejected


async def test_oip_routes_are_untouched() -> None:
    """The OIP endpoints and their 404 for unknown paths still answer beside the TF Serving ones."""
    async with _client(TFServer()) as client:
        assert (await client.get("/v2/models/m/ready")).status_code == 200
        assert (await client.get("/v2/nothing")).status_code == 404


def _vector(name: str, size: int) -> Tensor:
    return Tensor(name, "FP32", (size,), np.zeros(size, dtype=np.float32))


def _scalar(name: str) -> Tensor:
    return Tensor(name, "FP32", (), np.array(0.0, dtype=np.float32))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": ["\\ud800"]}', "input 'w'"),
        (b'{"signature_name": "\\ud800", "inputs": ["a"]}', "'signature_name'"),
    ],
    ids=["in-a-value", "in-signature-name"],
)
async def test_unpaired_surrogate_is_invalid_argument(body: bytes, message: str) -> None:
    """A string no UTF-8 can hold (taken by the NaN-tolerant parser) is a 400 naming the field, counted."""
    words = ModelMetadata("m", "fake", [TensorMetadata("w", "BYTES", (-1,))], METADATA.outputs)
    server = TFServer(metadata=words)
    async with _client(server) as client:
        reply = await client.post("/v1/models/m:predict", content=body)
    assert reply.status_code == 400
    assert message in reply.json()["error"] and "surrogate" in reply.json()["error"]
    assert server.rejected == [("m", "tfserving_rest", "INVALID_ARGUMENT")]


async def test_error_quoting_a_surrogate_is_still_written() -> None:
    """An error message quoting a client's string with a surrogate (here an unknown input name) is
    still TF Serving's JSON error body, the surrogate escaped."""
    async with _client(TFServer()) as client:
        reply = await client.post("/v1/models/m:predict", content=b'{"inputs": {"x": [1.0], "\\ud800": 1}}')
    assert reply.status_code == 400
    assert "\\ud800" in reply.json()["error"]


async def test_unexpected_failure_before_inference_is_counted_once() -> None:
    """An exception no code expects while decoding is logged, answered 500, and counted once as INTERNAL."""
    server = TFServer(broken=True)
    async with _client(server) as client:
        reply = await client.post("/v1/models/m:predict", content=ROW)
    assert reply.status_code == 500 and reply.json() == {"error": "internal error"}
    assert server.rejected == [("m", "tfserving_rest", "INTERNAL")]
    assert not server.called.is_set()


@pytest.mark.parametrize(
    "outputs",
    [
        [TensorMetadata("s", "FP32", ())],
        [TensorMetadata("y", "FP32", (2, 3)), TensorMetadata("z", "FP32", (3,))],
    ],
    ids=["rank-0", "fixed-batch-sizes-differ"],
)
async def test_row_request_the_metadata_shows_cannot_be_rows_is_refused_before_inference(
    outputs: list[TensorMetadata],
) -> None:
    """A row request for outputs that cannot be rows is a 400 before the model runs, counted once so."""
    server = TFServer(metadata=ModelMetadata("m", "fake", METADATA.inputs, outputs))
    async with _client(server) as client:
        reply = await client.post("/v1/models/m:predict", content=ROW)
    assert reply.status_code == 400 and "columnar" in reply.json()["error"]
    assert server.rejected == [("m", "tfserving_rest", "INVALID_ARGUMENT")]
    assert not server.called.is_set() and server.transfers == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ([_vector("y", 2), _vector("z", 3)], {"outputs": {"y": [0.0, 0.0], "z": [0.0, 0.0, 0.0]}}),
        ([_scalar("y")], {"outputs": 0.0}),
        ([], {"outputs": {}}),
    ],
    ids=["batch-sizes-differ", "rank-0", "no-outputs"],
)
async def test_answer_that_cannot_be_rows_is_answered_columnar(
    answer: list[Tensor], expected: object
) -> None:
    """An answer the metadata did not show cannot be rows (or no outputs at all) is not turned into a
    client error after `infer` counted it OK: it is a 200 in the columnar format, its sizes counted."""
    server = TFServer(answer=answer)
    async with _client(server) as client:
        reply = await client.post("/v1/models/m:predict", content=ROW)
    assert reply.status_code == 200, reply.text
    assert reply.json() == expected
    assert server.rejected == [] and server.transfers == [(len(ROW), len(reply.content))]

"""TFServingBackend over TF Serving's REST API, against an httpx MockTransport fake of it: columnar
`:predict` bodies on the wire, answers decoded with the model's metadata, metadata and status JSON read,
and every failure mapped to a `GatewayError` at the one boundary."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.backends.tfserving import TFServingBackend
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    ModelNotFound,
)
from gateway.settings import TFServingBackendSettings, TFServingRouteOptions
from gateway.types import InferenceRequest, ModelMetadata, Tensor, TensorMetadata

ENDPOINT = "tfs:8501"
METADATA = ModelMetadata(
    "double",
    "tensorflow",
    inputs=[TensorMetadata("x", "FP32", (-1, 3))],
    outputs=[TensorMetadata("y", "FP32", (-1, 3)), TensorMetadata("z", "INT64", (-1,))],
)


def _info(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    """A TensorInfo as TF Serving's REST API writes it (sizes are int64: strings)."""
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknown_rank": False},
        "name": f"{name}:0",
    }


SIGNATURE = {
    "inputs": {"x": _info("x", "DT_FLOAT", [-1, 3])},
    "outputs": {"y": _info("y", "DT_FLOAT", [-1, 3]), "z": _info("z", "DT_INT64", [-1])},
    "method_name": "tensorflow/serving/predict",
}
METADATA_BODY = {
    "model_spec": {"name": "double", "signature_name": "", "version": "1"},
    "metadata": {"signature_def": {"signature_def": {"serving_default": SIGNATURE, "other": SIGNATURE}}},
}
STATUS_BODY = {
    "model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}},
    ]
}


@dataclass
class FakeTFServing:
    """Model "double" on TF Serving's REST API: `:predict` answers y = 2x and z = the row sums, in the
    columnar format, as `tensorflow_model_server` does. `answer` replaces the next answer (status, body)
    and `fail` raises a transport error instead; `requests` records what was sent."""

    requests: list[httpx.Request] = field(default_factory=list)
    answer: tuple[int, bytes] | None = None
    fail: Exception | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            status, body = self.answer
            return httpx.Response(status, content=body, headers={"content-type": "application/json"})
        path = request.url.path
        if not path.startswith("/v1/models/double"):
            name = path.removeprefix("/v1/models/").split("/")[0].split(":")[0]
            return _json(404, {"error": f"Servable not found for request: Latest({name})"})
        if request.method == "POST" and path.endswith(":predict"):
            x = np.asarray(json.loads(request.content)["inputs"]["x"], dtype=np.float32)
            return _json(200, {"outputs": {"y": (x * 2).tolist(), "z": x.sum(axis=1).astype(int).tolist()}})
        if path.endswith("/metadata"):
            return _json(200, METADATA_BODY)
        return _json(200, STATUS_BODY)


def _json(status: int, doc: Any) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(doc).encode(), headers={"content-type": "application/json"}
    )


@pytest.fixture
async def tfs() -> AsyncIterator[tuple[FakeTFServing, TFServingBackend]]:
    fake = FakeTFServing()
    settings = TFServingBackendSettings(kind="tfserving", protocol="rest", endpoints=[ENDPOINT])
    backend = TFServingBackend("tfs", settings, http_transport=httpx.MockTransport(fake))
    try:
        yield fake, backend
    finally:
        await backend.close()


def _request(version: str = "") -> InferenceRequest:
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    return InferenceRequest("double", [Tensor("x", "FP32", x.shape, x)], model_version=version)


async def test_predict_sends_columnar_json_and_decodes_with_metadata(
    tfs: tuple[FakeTFServing, TFServingBackend],
) -> None:
    """Predict POSTs `{"inputs": {name: value}}` to `:predict`; the answer is typed by the metadata."""
    fake, backend = tfs
    response = await backend.infer(_request("1"), ENDPOINT, 5.0, metadata=METADATA)
    [sent] = fake.requests
    assert (sent.method, str(sent.url)) == ("POST", f"http://{ENDPOINT}/v1/models/double/versions/1:predict")
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == {"inputs": {"x": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}}
    y, z = response.outputs
    assert (y.name, y.datatype, y.shape, str(y.data.dtype)) == ("y", "FP32", (2, 3), "float32")
    assert y.data.tolist() == [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]
    assert (z.name, z.datatype, str(z.data.dtype), z.data.tolist()) == ("z", "INT64", "int64", [6, 15])
    assert response.model_version == "1"


async def test_predict_follows_route_options(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """The route's label goes in the path, its signature in the body, its outputs select the answer's."""
    fake, backend = tfs
    options = TFServingRouteOptions(signature_name="other", version_label="stable", outputs=("z",))
    response = await backend.infer(_request(), ENDPOINT, 5.0, options=options, metadata=METADATA)
    [sent] = fake.requests
    assert sent.url.path == "/v1/models/double/labels/stable:predict"
    assert json.loads(sent.content)["signature_name"] == "other"
    assert [t.name for t in response.outputs] == ["z"]


async def test_predict_reads_nan_tokens(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """TF Serving's NaN / Infinity tokens in an answer decode into float values."""
    fake, backend = tfs
    fake.answer = (200, b'{"outputs": {"y": [[NaN, Infinity, -Infinity]], "z": [1]}}')
    [y, _] = (await backend.infer(_request(), ENDPOINT, 5.0, metadata=METADATA)).outputs
    assert np.isnan(y.data[0, 0]) and y.data[0, 1:].tolist() == [np.inf, -np.inf]


async def test_predict_needs_metadata(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """REST answers carry no datatypes: without the metadata nothing is sent, a BackendError says why."""
    fake, backend = tfs
    assert backend.needs_metadata
    with pytest.raises(BackendError, match="no metadata"):
        await backend.infer(_request(), ENDPOINT, 5.0)
    assert fake.requests == []


async def test_metadata_is_the_signature(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """The metadata JSON's serving_default signature becomes OIP metadata, version from model_spec."""
    fake, backend = tfs
    metadata = await backend.model_metadata("double", "", ENDPOINT)
    assert fake.requests[0].url.path == "/v1/models/double/metadata"
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", (-1, 3))]
    assert [(t.name, t.datatype, t.shape) for t in metadata.outputs] == [
        ("y", "FP32", (-1, 3)),
        ("z", "INT64", (-1,)),
    ]
    assert (metadata.name, metadata.versions) == ("double", ["1"])


async def test_metadata_of_a_missing_signature(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """A route's signature the model lacks is a BackendError listing the signatures it has."""
    _, backend = tfs
    with pytest.raises(BackendError, match=r"no signature 'nope' \(signatures: other, serving_default\)"):
        await backend.model_metadata(
            "double", "", ENDPOINT, options=TFServingRouteOptions(signature_name="nope")
        )


@pytest.mark.parametrize(
    ("version", "path", "ready"),
    [("", "/v1/models/double", True), ("1", "/v1/models/double/versions/1", True), ("2", None, False)],
    ids=["any", "available", "loading"],
)
async def test_status(
    tfs: tuple[FakeTFServing, TFServingBackend], version: str, path: str | None, ready: bool
) -> None:
    """Readiness is GetModelStatus's JSON: the version asked for (or any) AVAILABLE."""
    fake, backend = tfs
    assert await backend.model_ready("double", version, ENDPOINT) is ready
    assert fake.requests[0].method == "GET"
    assert fake.requests[0].url.path == (path or f"/v1/models/double/versions/{version}")


async def test_unknown_model_is_not_found(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """TF Serving's 404 is the gateway's NOT_FOUND on every call."""
    _, backend = tfs
    with pytest.raises(ModelNotFound):
        await backend.model_ready("nope", "", ENDPOINT)
    calls: list[Callable[[], Any]] = [
        lambda: backend.model_metadata("nope", "", ENDPOINT),
        lambda: backend.infer(InferenceRequest("nope", _request().inputs), ENDPOINT, 5.0, metadata=METADATA),
    ]
    for call in calls:
        with pytest.raises(GatewayError) as info:
            await call()
        assert info.value.code is ErrorCode.NOT_FOUND
        assert "Servable not found" in info.value.message


@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "message"),
    [
        (
            400,
            b'{"error": "Expects arg[0] to be float"}',
            GatewayError,
            ErrorCode.INVALID_ARGUMENT,
            "Expects",
        ),
        (429, b'{"error": "queue full"}', GatewayError, ErrorCode.RESOURCE_EXHAUSTED, "queue full"),
        (501, b'{"error": "no"}', GatewayError, ErrorCode.UNIMPLEMENTED, "no"),
        (503, b'{"error": "down"}', BackendUnavailable, ErrorCode.UNAVAILABLE, "backend 'tfs' unavailable"),
        (504, b"", DeadlineExceeded, ErrorCode.DEADLINE_EXCEEDED, "backend 'tfs' did not answer"),
        (500, b'{"error": "OOM in kernel"}', BackendError, ErrorCode.BAD_GATEWAY, "answered HTTP 500"),
        (400, b"<html>bad</html>", BackendError, ErrorCode.BAD_GATEWAY, "answered HTTP 400"),
    ],
    ids=[
        "invalid-argument",
        "resource-exhausted",
        "unimplemented",
        "unavailable",
        "deadline",
        "500",
        "no-body",
    ],
)
async def test_error_bodies_are_mapped(
    tfs: tuple[FakeTFServing, TFServingBackend],
    status: int,
    body: bytes,
    kind: type[GatewayError],
    code: ErrorCode,
    message: str,
) -> None:
    """TF Serving's `{"error": ...}` with a client's status passes its message on under its code; a
    server failure is the backend's, never its internals; a body that is not TF Serving's is named so."""
    fake, backend = tfs
    fake.answer = (status, body)
    for call in (
        lambda: backend.infer(_request(), ENDPOINT, 5.0, metadata=METADATA),
        lambda: backend.model_metadata("double", "", ENDPOINT),
    ):
        with pytest.raises(kind) as info:
            await call()
        assert info.value.code is code and message in info.value.message
        assert "OOM" not in info.value.message


@pytest.mark.parametrize(
    "body",
    [b"<html>", b"[1]", b'{"predictions": [1]}', b'{"outputs": {"y": [[1, 2, 3]]}}', b'{"outputs": "a"}'],
    ids=["not-json", "not-an-object", "row-format", "output-missing", "bad-value"],
)
async def test_unreadable_predict_answer_is_backend_error(
    tfs: tuple[FakeTFServing, TFServingBackend], body: bytes
) -> None:
    """A 200 whose body is not a columnar answer fitting the metadata is a BackendError naming the backend."""
    fake, backend = tfs
    fake.answer = (200, body)
    with pytest.raises(BackendError, match="backend 'tfs'"):
        await backend.infer(_request(), ENDPOINT, 5.0, metadata=METADATA)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"metadata": [1]}',
        b'{"metadata": {"signature_def": {"signature_def": [1]}}}',
        b'{"model_spec": [1], "metadata": {"signature_def": {"signature_def": {}}}}',
    ],
    ids=["not-json", "not-an-object", "metadata-not-an-object", "signatures-not-a-map", "spec-not-an-object"],
)
async def test_unreadable_metadata_is_backend_error(
    tfs: tuple[FakeTFServing, TFServingBackend], body: bytes
) -> None:
    """Metadata JSON that cannot be read is a BackendError naming the backend."""
    fake, backend = tfs
    fake.answer = (200, body)
    with pytest.raises(BackendError, match="backend 'tfs'"):
        await backend.model_metadata("double", "", ENDPOINT)


@pytest.mark.parametrize("body", [b"{not json", b'"AVAILABLE"', b'{"model_version_status": 1}'])
async def test_unreadable_status_is_backend_error(
    tfs: tuple[FakeTFServing, TFServingBackend], body: bytes
) -> None:
    """Status JSON that cannot be read is a BackendError naming the backend."""
    fake, backend = tfs
    fake.answer = (200, body)
    with pytest.raises(BackendError, match="backend 'tfs'"):
        await backend.model_ready("double", "", ENDPOINT)


async def test_ready_is_any_http_answer(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """An endpoint that answers anything over HTTP is up (TF Serving has no health call); one that
    cannot be reached is not."""
    fake, backend = tfs
    fake.answer = (404, b"")
    assert await backend.ready(ENDPOINT)
    fake.answer, fake.fail = None, httpx.ConnectError("refused")
    assert not await backend.ready(ENDPOINT)


async def test_unreachable_backend_is_unavailable(tfs: tuple[FakeTFServing, TFServingBackend]) -> None:
    """A transport failure on predict is BackendUnavailable (the DataPlane retries another endpoint)."""
    fake, backend = tfs
    fake.fail = httpx.ConnectError("refused")
    with pytest.raises(BackendUnavailable):
        await backend.infer(_request(), ENDPOINT, 5.0, metadata=METADATA)

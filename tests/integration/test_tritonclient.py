"""The gateway and the JAX runtime driven by the standard Triton client, over REST and gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration

CNN_INPUT = ("image", "FP32", (28, 28, 1))
ENCODER_INPUT = ("tokens", "INT32", (16,))


_open_clients: list[Any] = []


def _client(protocol: str, url: str) -> Any:
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(url=url)
    _open_clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every client a test opened: an unclosed HTTP client's socket is a ResourceWarning (an error)."""
    yield
    while _open_clients:
        _open_clients.pop().close()


def _input(protocol: str, name: str, datatype: str, array: np.ndarray, binary: bool) -> Any:
    if protocol == "grpc":
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
    else:
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _images(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *CNN_INPUT[2]), dtype=np.float32)


def _tokens(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 100, size=(batch, *ENCODER_INPUT[2]), dtype=np.int32)


def _infer(protocol: str, url: str, model: str, array: np.ndarray, binary: bool = True, **kw: Any) -> Any:
    name, datatype, _ = CNN_INPUT if model == "cnn" else ENCODER_INPUT
    client = _client(protocol, url)
    outputs = None
    if protocol == "http":
        out_name = "probabilities" if model == "cnn" else "embedding"
        outputs = [httpclient.InferRequestedOutput(out_name, binary_data=binary)]
    return client.infer(model, [_input(protocol, name, datatype, array, binary)], outputs=outputs, **kw)


CASES = [("grpc", True), ("http", True), ("http", False)]
CASE_IDS = ["grpc-raw", "http-binary", "http-json"]


@pytest.mark.parametrize(("protocol", "binary"), CASES, ids=CASE_IDS)
def test_cnn_through_gateway_matches_runtime(
    protocol: str, binary: bool, gateway_http: str, gateway_grpc: str, runtime_http: str, runtime_grpc: str
) -> None:
    """A CNN batch through the gateway equals the batch sent to the runtime directly; rows are softmaxes."""
    images = _images(3)
    via_gateway = _infer(
        protocol, gateway_grpc if protocol == "grpc" else gateway_http, "cnn", images, binary
    )
    direct = _infer(protocol, runtime_grpc if protocol == "grpc" else runtime_http, "cnn", images, binary)
    got = via_gateway.as_numpy("probabilities")
    assert got.shape == (3, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, direct.as_numpy("probabilities"), rtol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), np.ones(3), rtol=1e-5)


@pytest.mark.parametrize(("protocol", "binary"), CASES, ids=CASE_IDS)
def test_encoder_through_gateway_matches_runtime(
    protocol: str, binary: bool, gateway_http: str, gateway_grpc: str, runtime_http: str, runtime_grpc: str
) -> None:
    """The transformer encoder answers identically through the gateway and directly; rows differ by input."""
    tokens = _tokens(2)
    via_gateway = _infer(
        protocol, gateway_grpc if protocol == "grpc" else gateway_http, "transformer", tokens, binary
    )
    direct = _infer(
        protocol, runtime_grpc if protocol == "grpc" else runtime_http, "transformer", tokens, binary
    )
    got = via_gateway.as_numpy("embedding")
    assert got.shape == (2, 32)
    np.testing.assert_allclose(got, direct.as_numpy("embedding"), rtol=1e-6)
    assert not np.allclose(got[0], got[1])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_http_request(algorithm: str, gateway_http: str) -> None:
    """tritonclient's request_compression_algorithm (Content-Encoding gzip/deflate) is served."""
    tokens = _tokens(2)
    result = _infer("http", gateway_http, "transformer", tokens, request_compression_algorithm=algorithm)
    assert result.as_numpy("embedding").shape == (2, 32)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_health_metadata_and_config(protocol: str, gateway_http: str, gateway_grpc: str) -> None:
    """Health, server metadata (extensions), model metadata and Triton model config on both fronts."""
    client = _client(protocol, gateway_grpc if protocol == "grpc" else gateway_http)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cnn")
    as_json = protocol == "grpc"
    server = client.get_server_metadata(as_json=True) if as_json else client.get_server_metadata()
    assert "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("cnn", as_json=True) if as_json else client.get_model_metadata("cnn")
    assert [i["name"] for i in meta["inputs"]] == ["image"]
    assert [int(d) for d in meta["inputs"][0]["shape"]] == [-1, 28, 28, 1]
    config = client.get_model_config("cnn", as_json=True) if as_json else client.get_model_config("cnn")
    config = config.get("config", config)
    assert int(config["max_batch_size"]) > 0
    assert [int(d) for d in config["input"][0]["dims"]] == [28, 28, 1]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_request_id_echoed(protocol: str, gateway_http: str, gateway_grpc: str) -> None:
    """The request id a client sets comes back on the response."""
    url = gateway_grpc if protocol == "grpc" else gateway_http
    result = _infer(protocol, url, "transformer", _tokens(1), request_id="req-42")
    response = result.get_response(as_json=True) if protocol == "grpc" else result.get_response()
    assert response["id"] == "req-42"


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_unknown_model_is_not_found(protocol: str, gateway_http: str, gateway_grpc: str) -> None:
    """An unknown model is 404 over REST and NOT_FOUND over gRPC, naming the model."""
    url = gateway_grpc if protocol == "grpc" else gateway_http
    with pytest.raises(InferenceServerException) as info:
        _infer(protocol, url, "no-such-model", _tokens(1))
    assert _status(info.value) in ("404", "StatusCode.NOT_FOUND")
    assert "no-such-model" in info.value.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_wrong_input_name_is_invalid_argument(protocol: str, gateway_http: str, gateway_grpc: str) -> None:
    """An input name the model does not have is rejected (400 / INVALID_ARGUMENT) and named."""
    url = gateway_grpc if protocol == "grpc" else gateway_http
    client = _client(protocol, url)
    tensor = _input(protocol, "not_tokens", "INT32", _tokens(1), True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("transformer", [tensor])
    assert _status(info.value) in ("400", "StatusCode.INVALID_ARGUMENT")
    assert "not_tokens" in info.value.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_wrong_datatype_is_invalid_argument(protocol: str, gateway_http: str, gateway_grpc: str) -> None:
    """FP64 data for an FP32 input is rejected with a message naming the input."""
    url = gateway_grpc if protocol == "grpc" else gateway_http
    client = _client(protocol, url)
    tensor = _input(protocol, "image", "FP64", _images(1).astype(np.float64), True)
    with pytest.raises(InferenceServerException) as info:
        client.infer("cnn", [tensor])
    assert _status(info.value) in ("400", "StatusCode.INVALID_ARGUMENT")
    assert "image" in info.value.message()


def test_deadline_parameter_gives_504(gateway_http: str) -> None:
    """A request whose client timeout (1 µs) expires in the gateway is answered 504."""
    with pytest.raises(InferenceServerException) as info:
        _infer("http", gateway_http, "cnn", _images(1), timeout=1)
    assert _status(info.value) == "504"


def test_grpc_deadline_is_deadline_exceeded(gateway_grpc: str) -> None:
    """A gRPC call whose deadline passes reports DEADLINE_EXCEEDED."""
    with pytest.raises(InferenceServerException) as info:
        _infer("grpc", gateway_grpc, "cnn", _images(1), client_timeout=1e-6)
    assert _status(info.value) == "StatusCode.DEADLINE_EXCEEDED"

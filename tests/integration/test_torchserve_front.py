"""TorchServe clients calling the gateway's TorchServe front (REST `/predictions` over httpx, gRPC
`InferenceAPIsService` over the generated stubs) with the project's tensor payload: the JAX runtime's
"mlp" and TF Serving's (version "tfserving") answer as they do over OIP."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from gateway.codecs.torchserve import payload
from gateway.local_stack import TFSERVING_VERSION, LocalStack
from gateway.proto.torchserve import inference_pb2 as pb
from gateway.types import Tensor

pytestmark = pytest.mark.integration

MODEL = "mlp"
INPUT, OUTPUT = "features", "logits"
SERVICE = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"


@pytest.fixture(scope="module")
def channel(gateway_grpc: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway_grpc) as opened:
        yield opened


@pytest.fixture(scope="module")
def rest(gateway_http: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{gateway_http}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(11).random((3, 16), dtype=np.float32)


@pytest.fixture(params=["", TFSERVING_VERSION], ids=["jax", "tfserving"])
def version(request: pytest.FixtureRequest, stack: LocalStack) -> str:
    """The JAX runtime's model (no version) and TF Serving's (version "tfserving")."""
    if request.param and stack.tfserving is None:
        pytest.skip("TensorFlow is not installed: the stack runs without TF Serving")
    chosen: str = request.param
    return chosen


def _path(version: str) -> str:
    return f"/predictions/{MODEL}" + (f"/{version}" if version else "")


def _oip_answer(rest: httpx.Client, features: np.ndarray, version: str) -> np.ndarray:
    base = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "")
    tensor = {
        "name": INPUT,
        "datatype": "FP32",
        "shape": list(features.shape),
        "data": features.ravel().tolist(),
    }
    reply = rest.post(f"{base}/infer", json={"inputs": [tensor]})
    assert reply.status_code == 200, reply.text
    output = next(o for o in reply.json()["outputs"] if o["name"] == OUTPUT)
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _body(features: np.ndarray) -> bytes:
    return payload.encode_request([Tensor(INPUT, "FP32", features.shape, features)])


def _logits(answer: bytes) -> np.ndarray:
    tensors = {t.name: t for t in payload.decode_response(answer)}
    assert tensors[OUTPUT].datatype == "FP32"
    return np.asarray(tensors[OUTPUT].data)


def _predictions(channel: grpc.Channel, request: pb.PredictionsRequest) -> pb.PredictionResponse:
    rpc = channel.unary_unary(
        SERVICE + "Predictions",
        request_serializer=pb.PredictionsRequest.SerializeToString,
        response_deserializer=pb.PredictionResponse.FromString,
    )
    reply: pb.PredictionResponse = rpc(request, timeout=30)
    return reply


def test_rest_predictions_equal_oip(rest: httpx.Client, features: np.ndarray, version: str) -> None:
    """`POST /predictions/mlp[/tfserving]` with the payload answers the OIP answer's logits (a bearer key,
    as TorchServe clients send, is ignored)."""
    headers = {"content-type": payload.CONTENT_TYPE, "authorization": "Bearer not-checked"}
    reply = rest.post(_path(version), content=_body(features), headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == payload.CONTENT_TYPE
    expected = _oip_answer(rest, features, version)
    np.testing.assert_allclose(_logits(reply.content), expected, rtol=1e-5, atol=1e-6)


def test_grpc_predictions_equal_oip(
    channel: grpc.Channel, rest: httpx.Client, features: np.ndarray, version: str
) -> None:
    """gRPC Predictions with the payload as input "data" answers the OIP answer's logits."""
    request = pb.PredictionsRequest(model_name=MODEL, model_version=version, input={"data": _body(features)})
    reply = _predictions(channel, request)
    expected = _oip_answer(rest, features, version)
    np.testing.assert_allclose(_logits(reply.prediction), expected, rtol=1e-5, atol=1e-6)


def test_grpc_stream_predictions_is_one_predictions_answer(
    channel: grpc.Channel, features: np.ndarray, version: str
) -> None:
    """StreamPredictions streams exactly one message, the Predictions answer, and ends (TorchServe 0.12
    itself fails the call with "Worker died." for a handler that does not mark its answer last)."""
    request = pb.PredictionsRequest(model_name=MODEL, model_version=version, input={"data": _body(features)})
    stream = channel.unary_stream(
        SERVICE + "StreamPredictions",
        request_serializer=pb.PredictionsRequest.SerializeToString,
        response_deserializer=pb.PredictionResponse.FromString,
    )
    replies = list(stream(request, timeout=30))
    assert len(replies) == 1
    np.testing.assert_array_equal(
        _logits(replies[0].prediction), _logits(_predictions(channel, request).prediction)
    )


def test_metadata_query_is_the_oip_metadata(channel: grpc.Channel, rest: httpx.Client, version: str) -> None:
    """A metadata query answers the model's OIP inputs and outputs as a signature, over both transports."""
    base = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "")
    oip = rest.get(base).json()

    def entries(key: str) -> list[dict[str, Any]]:
        return [{"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]} for t in oip[key]]

    expected = {"inputs": entries("inputs"), "outputs": entries("outputs")}
    assert expected["inputs"][0]["name"] == INPUT
    reply = rest.post(_path(version), content=payload.encode_metadata_request())
    assert reply.status_code == 200, reply.text
    assert reply.json() == expected
    request = pb.PredictionsRequest(
        model_name=MODEL, model_version=version, input={"data": payload.encode_metadata_request()}
    )
    assert json.loads(_predictions(channel, request).prediction) == expected


def test_ping(channel: grpc.Channel, rest: httpx.Client) -> None:
    """`GET /ping` and gRPC Ping say Healthy while the gateway serves."""
    reply = rest.get("/ping")
    assert reply.status_code == 200 and reply.json() == {"status": "Healthy"}
    ping = channel.unary_unary(SERVICE + "Ping", response_deserializer=pb.TorchServeHealthResponse.FromString)
    health: pb.TorchServeHealthResponse = ping(b"", timeout=30)
    assert json.loads(health.health) == {"status": "Healthy"}


def test_unknown_model_is_not_found(channel: grpc.Channel, rest: httpx.Client, features: np.ndarray) -> None:
    """An unknown model is TorchServe's 404 ModelNotFoundException over REST and NOT_FOUND over gRPC."""
    reply = rest.post("/predictions/no-such-model", content=_body(features))
    assert reply.status_code == 404
    doc = reply.json()
    assert (
        doc["code"] == 404 and doc["type"] == "ModelNotFoundException" and "no-such-model" in doc["message"]
    )
    request = pb.PredictionsRequest(model_name="no-such-model", input={"data": _body(features)})
    with pytest.raises(grpc.RpcError) as info:
        _predictions(channel, request)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_payload_is_bad_request(channel: grpc.Channel, rest: httpx.Client) -> None:
    """Bytes that are not the payload are TorchServe's 400 BadRequestException over REST and
    INVALID_ARGUMENT over gRPC; a payload whose input does not fit the model is refused by the model."""
    reply = rest.post(_path(""), content=b'{"instances": [[1, 2]]}')
    assert reply.status_code == 400 and reply.json()["type"] == "BadRequestException"
    request = pb.PredictionsRequest(model_name=MODEL, input={"data": b"not a payload"})
    with pytest.raises(grpc.RpcError) as info:
        _predictions(channel, request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    wrong = np.zeros((1, 3), dtype=np.float32)  # 3 features where the model takes 16
    reply = rest.post(_path(""), content=_body(wrong))
    assert reply.status_code == 400 and INPUT in reply.json()["message"]


def _ok_count(stack: LocalStack, protocol: str) -> float:
    """gateway_requests_total of "mlp" answered OK under `protocol`, summed over its other labels."""
    ports = stack.ports
    text = httpx.get(f"http://{ports.host}:{ports.gateway_metrics}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("gateway_requests_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        if f'protocol="{protocol}"' in labels and f'model="{MODEL}"' in labels and 'code="OK"' in labels:
            total += float(value)
    return total


def test_requests_are_counted_under_torchserve_protocols(
    stack: LocalStack, channel: grpc.Channel, rest: httpx.Client, features: np.ndarray
) -> None:
    """One Predictions call of each transport moves gateway_requests_total{code="OK"} of its
    torchserve_* label by exactly 1; a metadata query moves nothing."""
    before = _ok_count(stack, "torchserve_grpc")
    _predictions(channel, pb.PredictionsRequest(model_name=MODEL, input={"data": _body(features)}))
    assert _ok_count(stack, "torchserve_grpc") - before == 1
    before = _ok_count(stack, "torchserve_rest")
    assert rest.post(_path(""), content=_body(features)).status_code == 200
    assert rest.post(_path(""), content=payload.encode_metadata_request()).status_code == 200
    assert _ok_count(stack, "torchserve_rest") - before == 1


def test_readme_example(stack: LocalStack, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's TorchServe example runs against the stack (its ports swapped in) and prints logits."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## TorchServe clients") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    ports = stack.ports
    code = block.group(1).replace("localhost:8000", f"{ports.host}:{ports.gateway_rest}")
    code = code.replace("localhost:8001", f"{ports.host}:{ports.gateway_grpc}")
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count("[[") == 2, printed

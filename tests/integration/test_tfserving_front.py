"""TF Serving's official clients (the tensorflow-serving-api stubs, TF's tensor helpers, and its REST
JSON over httpx) calling the gateway's TF Serving front, which routes to the JAX runtime's "cnn"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from gateway.local_stack import LocalStack

pytestmark = pytest.mark.integration

MODEL = "cnn"
INPUT, OUTPUT = "image", "probabilities"


@pytest.fixture(scope="module")
def channel(gateway_grpc: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(gateway_grpc) as opened:
        yield opened


@pytest.fixture(scope="module")
def rest(gateway_http: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{gateway_http}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(7).random((3, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def oip_answer(rest: httpx.Client, images: np.ndarray) -> np.ndarray:
    """The OIP answer for `images`, which every TF Serving form must equal."""
    body = {
        "inputs": [
            {"name": INPUT, "datatype": "FP32", "shape": list(images.shape), "data": images.ravel().tolist()}
        ]
    }
    reply = rest.post(f"/v2/models/{MODEL}/infer", json=body)
    assert reply.status_code == 200, reply.text
    output = next(o for o in reply.json()["outputs"] if o["name"] == OUTPUT)
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _predict_request(
    array: np.ndarray, model: str = MODEL, signature: str = ""
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if signature:
        request.model_spec.signature_name = signature
    request.inputs[INPUT].CopyFrom(tf.make_tensor_proto(array))
    return request


def _close(got: Any, expected: np.ndarray) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), expected, rtol=1e-5, atol=1e-6)


def test_grpc_predict_equals_oip(channel: grpc.Channel, images: np.ndarray, oip_answer: np.ndarray) -> None:
    """Predict over gRPC with the official stub answers typed float_val tensors equal to the OIP answer."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    reply = stub.Predict(_predict_request(images), timeout=30)
    proto = reply.outputs[OUTPUT]
    assert proto.float_val and not proto.tensor_content  # TF Serving's default reply form
    _close(tf.make_ndarray(proto), oip_answer)
    assert reply.model_spec.name == MODEL and reply.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize("row_format", [True, False], ids=["instances", "inputs"])
def test_rest_predict_equals_oip(
    rest: httpx.Client, images: np.ndarray, oip_answer: np.ndarray, row_format: bool
) -> None:
    """`:predict` in row and columnar format answers `predictions` / `outputs` equal to the OIP answer."""
    body = {"instances": images.tolist()} if row_format else {"inputs": {INPUT: images.tolist()}}
    reply = rest.post(f"/v1/models/{MODEL}:predict", json=body)
    assert reply.status_code == 200, reply.text
    _close(reply.json()["predictions" if row_format else "outputs"], oip_answer)


def test_metadata_over_both_fronts(channel: grpc.Channel, rest: httpx.Client) -> None:
    """GetModelMetadata (gRPC) and `/metadata` (REST) describe the serving_default signature."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    reply = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert reply.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert signature.inputs[INPUT].dtype == tf.float32.as_datatype_enum
    assert [d.size for d in signature.inputs[INPUT].tensor_shape.dim] == [-1, 28, 28, 1]

    doc = rest.get(f"/v1/models/{MODEL}/metadata").json()
    served = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert served["inputs"][INPUT]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in served["inputs"][INPUT]["tensor_shape"]["dim"]] == ["-1", "28", "28", "1"]
    assert OUTPUT in served["outputs"]


def test_status_over_both_fronts(channel: grpc.Channel, rest: httpx.Client) -> None:
    """GetModelStatus (gRPC) and `GET /v1/models/{m}` (REST, any case) report the model AVAILABLE."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    reply = stub.GetModelStatus(request, timeout=30)
    assert [s.state for s in reply.model_version_status] == [
        get_model_status_pb2.ModelVersionStatus.AVAILABLE
    ]

    doc = rest.get(f"/V1/Models/{MODEL}").json()
    [status] = doc["model_version_status"]
    assert status["state"] == "AVAILABLE"
    assert status["status"] == {"error_code": "OK", "error_message": ""}


def test_unknown_model_is_not_found(channel: grpc.Channel, rest: httpx.Client, images: np.ndarray) -> None:
    """An unknown model is 404 `{"error": ...}` over REST and NOT_FOUND over gRPC, naming it."""
    reply = rest.post("/v1/models/no-such-model:predict", json={"instances": images.tolist()})
    assert reply.status_code == 404 and "no-such-model" in reply.json()["error"]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_predict_request(images, model="no-such-model"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_input_is_invalid_argument(channel: grpc.Channel, rest: httpx.Client) -> None:
    """Values that do not fit the input are 400 over REST and INVALID_ARGUMENT over gRPC, naming it."""
    reply = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": [["not", "numbers"]]})
    assert reply.status_code == 400 and INPUT in reply.json()["error"]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_predict_request(np.zeros((1, 28, 28, 1), dtype=np.int32)), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert INPUT in (info.value.details() or "")


def test_unknown_signature_is_failed_precondition(channel: grpc.Channel, images: np.ndarray) -> None:
    """A signature other than serving_default gets TF Serving's FAILED_PRECONDITION."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(_predict_request(images, signature="predict_images"), timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_readme_curl_example(rest: httpx.Client) -> None:
    """The README's example: INT32 tokens in row format to the transformer answer one 32-float row."""
    body = {"instances": [list(range(1, 17))]}
    reply = rest.post("/v1/models/transformer:predict", json=body)
    assert reply.status_code == 200, reply.text
    [row] = reply.json()["predictions"]
    assert len(row) == 32


def _ok_count(stack: LocalStack, protocol: str) -> float:
    """gateway_requests_total of "cnn" answered OK under `protocol`, summed over its other labels."""
    ports = stack.ports
    text = httpx.get(f"http://{ports.host}:{ports.gateway_metrics}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("gateway_requests_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        if f'protocol="{protocol}"' in labels and 'model="cnn"' in labels and 'code="OK"' in labels:
            total += float(value)
    return total


def test_requests_are_counted_under_tf_serving_protocols(
    stack: LocalStack, channel: grpc.Channel, rest: httpx.Client, images: np.ndarray
) -> None:
    """One Predict call of each protocol moves gateway_requests_total{code="OK"} of its tfserving_*
    label by exactly 1 (counted once, whatever earlier tests counted)."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = _ok_count(stack, "tfserving_grpc")
    stub.Predict(_predict_request(images), timeout=30)
    assert _ok_count(stack, "tfserving_grpc") - before == 1
    before = _ok_count(stack, "tfserving_rest")
    reply = rest.post(f"/v1/models/{MODEL}:predict", json={"instances": images.tolist()})
    assert reply.status_code == 200, reply.text
    assert _ok_count(stack, "tfserving_rest") - before == 1

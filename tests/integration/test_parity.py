"""Parity: the same inputs through the gateway to the JAX runtime, TF Serving and TorchServe (same weights)
give the same outputs within the documented fp32 tolerance, for every example model, over OIP REST, OIP
gRPC, and TF Serving's and TorchServe's APIs (REST and gRPC) on the gateway's front."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from gateway.codecs.tfserving.predict import predict_request
from gateway.codecs.tfserving.tensor_proto import tensor_from_proto
from gateway.codecs.torchserve import payload
from gateway.local_stack import TFSERVING_VERSION, TORCHSERVE_VERSION, LocalStack
from gateway.proto.tfserving.tensorflow_serving.apis.predict_pb2 import PredictResponse
from gateway.proto.torchserve import inference_pb2 as ts_pb
from gateway.types import InferenceRequest, Tensor
from runtimes.examples.specs import SPECS, ExampleSpec, sample_inputs
from tests.unit.test_example_parity import ATOL, RTOL

pytestmark = pytest.mark.integration

ROWS = 3
_OIP_DTYPES = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}


def _inputs(spec: ExampleSpec) -> tuple[np.ndarray, ...]:
    return sample_inputs(spec, np.random.default_rng(7), ROWS)


def _frameworks(stack: LocalStack) -> list[str]:
    """The gateway versions that pick each framework the stack runs ("" is the JAX runtime)."""
    versions = [""]
    if stack.tfserving is not None:
        versions.append(TFSERVING_VERSION)
    if stack.torchserve is not None:
        versions.append(TORCHSERVE_VERSION)
    if len(versions) < 2:
        pytest.skip("neither TensorFlow nor TorchServe is installed: nothing to compare the JAX runtime with")
    return versions


def _assert_agree(spec: ExampleSpec, answers: dict[str, dict[str, np.ndarray]]) -> None:
    reference = answers[""]
    for version, outputs in answers.items():
        for output in spec.outputs:
            got = np.asarray(outputs[output.name], dtype=np.float64)
            assert got.shape[0] == ROWS, (version, output.name)
            np.testing.assert_allclose(got, reference[output.name], rtol=RTOL, atol=ATOL, err_msg=version)


def _oip(client: Any, module: Any, spec: ExampleSpec, version: str) -> dict[str, np.ndarray]:
    inputs = []
    for info, array in zip(spec.inputs, _inputs(spec), strict=True):
        tensor = module.InferInput(info.name, list(array.shape), _OIP_DTYPES[str(array.dtype)])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(spec.name, inputs, model_version=version)
    return {o.name: result.as_numpy(o.name) for o in spec.outputs}


def _tfserving_rest(base: str, spec: ExampleSpec, version: str) -> dict[str, np.ndarray]:
    columns = {info.name: array.tolist() for info, array in zip(spec.inputs, _inputs(spec), strict=True)}
    url = f"{base}/v1/models/{spec.name}" + (f"/labels/{version}" if version else "") + ":predict"
    reply = httpx.post(url, json={"inputs": columns}, timeout=30)
    assert reply.status_code == 200, reply.text
    outputs = reply.json()["outputs"]
    return outputs if isinstance(outputs, dict) else {spec.outputs[0].name: outputs}


def _tfserving_grpc(address: str, spec: ExampleSpec, version: str) -> dict[str, np.ndarray]:
    """TF Serving's Predict on the gateway's gRPC front (a version other than a number is a label)."""
    tensors = [
        Tensor(i.name, _OIP_DTYPES[str(a.dtype)], a.shape, a)
        for i, a in zip(spec.inputs, _inputs(spec), strict=True)
    ]
    message = predict_request(InferenceRequest(spec.name, tensors, model_version=version))
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        reply = PredictResponse.FromString(call(message.SerializeToString(), timeout=30))
    return {name: tensor_from_proto(name, reply.outputs[name], role="output").data for name in reply.outputs}


def _torchserve_body(spec: ExampleSpec) -> bytes:
    arrays = _inputs(spec)
    return payload.encode_request(
        [
            Tensor(i.name, _OIP_DTYPES[str(a.dtype)], a.shape, a)
            for i, a in zip(spec.inputs, arrays, strict=True)
        ]
    )


def _torchserve_rest(base: str, spec: ExampleSpec, version: str) -> dict[str, np.ndarray]:
    url = f"{base}/predictions/{spec.name}" + (f"/{version}" if version else "")
    reply = httpx.post(url, content=_torchserve_body(spec), headers={"content-type": payload.CONTENT_TYPE})
    assert reply.status_code == 200, reply.text
    return {t.name: t.data for t in payload.decode_response(reply.content)}


def _torchserve_grpc(address: str, spec: ExampleSpec, version: str) -> dict[str, np.ndarray]:
    request = ts_pb.PredictionsRequest(model_name=spec.name, model_version=version)
    request.input["data"] = _torchserve_body(spec)
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary("/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions")
        reply = ts_pb.PredictionResponse.FromString(call(request.SerializeToString(), timeout=30))
    return {t.name: t.data for t in payload.decode_response(reply.prediction)}


@pytest.mark.parametrize("model", sorted(SPECS))
@pytest.mark.parametrize(
    "api", ["oip-grpc", "oip-rest", "tfserving-rest", "tfserving-grpc", "torchserve-rest", "torchserve-grpc"]
)
def test_every_framework_agrees_over_every_api(stack: LocalStack, model: str, api: str) -> None:
    """One input through the gateway to each framework, by each client API: outputs equal within the
    fp32 tolerance (rtol 1e-5, atol 5e-6)."""
    versions = _frameworks(stack)
    spec = SPECS[model]
    host = stack.ports.host
    rest = f"http://{host}:{stack.ports.gateway_rest}"
    grpc_address = f"{host}:{stack.ports.gateway_grpc}"
    answers: dict[str, dict[str, np.ndarray]] = {}
    for version in versions:
        if api == "oip-grpc":
            answers[version] = _oip(grpcclient.InferenceServerClient(grpc_address), grpcclient, spec, version)
        elif api == "oip-rest":
            client = httpclient.InferenceServerClient(rest.removeprefix("http://"))
            answers[version] = _oip(client, httpclient, spec, version)
        elif api == "tfserving-rest":
            answers[version] = _tfserving_rest(rest, spec, version)
        elif api == "tfserving-grpc":
            answers[version] = _tfserving_grpc(grpc_address, spec, version)
        elif api == "torchserve-rest":
            answers[version] = _torchserve_rest(rest, spec, version)
        else:
            answers[version] = _torchserve_grpc(grpc_address, spec, version)
    _assert_agree(spec, answers)


def test_tfserving_runtime_answers_official_stubs_directly(stack: LocalStack) -> None:
    """The TF Serving the stack started answers the official stubs itself (the gateway's backend peer)."""
    if stack.tfserving is None:
        pytest.skip("TensorFlow is not installed: the stack runs without TF Serving")
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    spec = SPECS["cnn"]
    (image,) = _inputs(spec)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cnn"
    request.inputs[spec.inputs[0].name].CopyFrom(tf.make_tensor_proto(image))
    with grpc.insecure_channel(f"{stack.ports.host}:{stack.ports.tfserving_grpc}") as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    probabilities = tf.make_ndarray(reply.outputs[spec.outputs[0].name])
    assert probabilities.shape == (ROWS, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

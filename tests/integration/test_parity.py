"""Parity: the same inputs through the gateway to the JAX runtime and to TF Serving (same weights) give
the same outputs within the documented fp32 tolerance, for every example model, over OIP REST, OIP
gRPC and TF Serving's own API on the gateway's front."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from gateway.local_stack import TFSERVING_VERSION, LocalStack
from runtimes.examples.specs import SPECS, ExampleSpec, sample_inputs
from tests.unit.test_example_parity import ATOL, RTOL

pytestmark = pytest.mark.integration

ROWS = 3
_TRITON_DTYPES = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}


def _spec(name: str) -> ExampleSpec:
    return SPECS[name]


def _inputs(spec: ExampleSpec) -> tuple[np.ndarray, ...]:
    return sample_inputs(spec, np.random.default_rng(7), ROWS)


def _triton_infer(client: Any, module: Any, spec: ExampleSpec, version: str) -> dict[str, np.ndarray]:
    inputs = []
    for info, array in zip(spec.inputs, _inputs(spec), strict=True):
        tensor = module.InferInput(info.name, list(array.shape), _TRITON_DTYPES[str(array.dtype)])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer(spec.name, inputs, model_version=version)
    return {o.name: result.as_numpy(o.name) for o in spec.outputs}


def _require_tfserving(stack: LocalStack) -> None:
    if stack.tfserving is None:
        pytest.skip("TensorFlow is not installed: the stack runs without TF Serving")


@pytest.mark.parametrize("model", sorted(SPECS))
@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_jax_and_tfserving_agree_over_oip(stack: LocalStack, model: str, protocol: str) -> None:
    """One input through the gateway to each framework: outputs equal within the fp32 tolerance."""
    _require_tfserving(stack)
    host = stack.ports.host
    if protocol == "grpc":
        module: Any = grpcclient
        client: Any = grpcclient.InferenceServerClient(f"{host}:{stack.ports.gateway_grpc}")
    else:
        module = httpclient
        client = httpclient.InferenceServerClient(f"{host}:{stack.ports.gateway_rest}")
    spec = _spec(model)
    jax_out = _triton_infer(client, module, spec, "")
    tf_out = _triton_infer(client, module, spec, TFSERVING_VERSION)
    for output in spec.outputs:
        assert jax_out[output.name].shape[0] == ROWS
        np.testing.assert_allclose(tf_out[output.name], jax_out[output.name], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("model", sorted(SPECS))
def test_jax_and_tfserving_agree_over_the_tfserving_api(stack: LocalStack, model: str) -> None:
    """TF Serving's REST API on the gateway: the label picks the framework, the answers agree."""
    _require_tfserving(stack)
    spec = _spec(model)
    columns = {info.name: array.tolist() for info, array in zip(spec.inputs, _inputs(spec), strict=True)}
    base = f"http://{stack.ports.host}:{stack.ports.gateway_rest}/v1/models/{model}"
    answers = []
    for url in (f"{base}:predict", f"{base}/labels/{TFSERVING_VERSION}:predict"):
        reply = httpx.post(url, json={"inputs": columns}, timeout=30)
        assert reply.status_code == 200, reply.text
        outputs = reply.json()["outputs"]
        answers.append(outputs if isinstance(outputs, dict) else {spec.outputs[0].name: outputs})
    for output in spec.outputs:
        jax_value = np.asarray(answers[0][output.name], dtype=np.float64)
        tf_value = np.asarray(answers[1][output.name], dtype=np.float64)
        np.testing.assert_allclose(tf_value, jax_value, rtol=RTOL, atol=ATOL)


def test_tfserving_runtime_answers_official_stubs_directly(stack: LocalStack) -> None:
    """The TF Serving the stack started answers the official stubs itself (the gateway's backend peer)."""
    _require_tfserving(stack)
    grpc = pytest.importorskip("grpc")
    tf = pytest.importorskip("tensorflow")
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    spec = _spec("cnn")
    (image,) = _inputs(spec)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cnn"
    request.inputs[spec.inputs[0].name].CopyFrom(tf.make_tensor_proto(image))
    with grpc.insecure_channel(f"{stack.ports.host}:{stack.ports.tfserving_grpc}") as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    probabilities = tf.make_ndarray(reply.outputs[spec.outputs[0].name])
    assert probabilities.shape == (ROWS, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

"""The `tfserving` backend kind against the real TF Serving the stack starts (the binary, or the project's
runtime of its API), over gRPC and REST: answers, metadata, config, readiness and errors through the
gateway, and one framework down leaving the other's models ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.local_stack import LocalStack, free_port
from runtimes.examples.specs import SPECS, sample_inputs
from tests.integration.processes import gateway_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def addresses(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway with TF Serving behind it twice (gRPC and REST), the JAX runtime, and a dead TF Serving."""
    if stack.tfserving is None:
        pytest.skip("TensorFlow is not installed: the stack runs without TF Serving")
    host = stack.ports.host
    backends: dict[str, Any] = {
        "tfs-grpc": {"kind": "tfserving", "endpoints": [f"{host}:{stack.ports.tfserving_grpc}"]},
        "tfs-rest": {
            "kind": "tfserving",
            "protocol": "rest",
            "endpoints": [f"{host}:{stack.ports.tfserving_rest}"],
        },
        "tfs-dead": {"kind": "tfserving", "endpoints": [f"127.0.0.1:{free_port()}"], "timeout_s": 5},
        "jax": {"kind": "v2", "endpoints": [f"{host}:{stack.ports.runtime_grpc}"]},
    }
    routes = [
        {"model": "cnn", "backend": "tfs-grpc"},
        {"model": "cnn", "version": "rest", "backend": "tfs-rest", "options": {"version": 1}},
        {"model": "mlp", "backend": "tfs-rest", "options": {"outputs": ["logits"]}},
        {
            "model": "mlp",
            "version": "typo",
            "backend": "tfs-grpc",
            "options": {"version": 1, "outputs": ["lgts"]},
        },
        {"model": "transformer", "backend": "jax"},
        {"model": "gone", "backend": "tfs-dead", "backend_model": "cnn"},
    ]
    workdir: Path = tmp_path_factory.mktemp("tfs-gateway")
    with gateway_process(workdir, backends, routes) as running:
        yield running


def _image() -> np.ndarray:
    (image,) = sample_inputs(SPECS["cnn"], np.random.default_rng(3), 2)
    return image


def _infer(client: Any, module: Any, model: str, version: str = "") -> np.ndarray:
    tensor = module.InferInput("image", [2, 28, 28, 1], "FP32")
    tensor.set_data_from_numpy(_image())
    result = client.infer(model, [tensor], model_version=version)
    out: np.ndarray = result.as_numpy(SPECS["cnn"].outputs[0].name)
    return out


def test_grpc_and_rest_transports_agree(addresses: tuple[str, str]) -> None:
    """The same TF model through the gRPC and the REST transport (REST decoded with the metadata)."""
    rest, grpc_address = addresses
    http = httpclient.InferenceServerClient(rest)
    over_grpc = _infer(http, httpclient, "cnn")
    over_rest = _infer(http, httpclient, "cnn", "rest")
    assert over_grpc.shape == (2, 10) and over_grpc.dtype == np.float32
    np.testing.assert_array_equal(over_rest, over_grpc)  # fp32 written as JSON by TF Serving round-trips
    client = grpcclient.InferenceServerClient(grpc_address)
    np.testing.assert_array_equal(_infer(client, grpcclient, "cnn"), over_grpc)


def test_metadata_config_and_readiness(addresses: tuple[str, str]) -> None:
    """The signature is the OIP metadata; the derived config says no batching; GetModelStatus is readiness."""
    rest, _ = addresses
    http = httpclient.InferenceServerClient(rest)
    for version in ("", "rest"):
        metadata = http.get_model_metadata("cnn", model_version=version)
        assert metadata["name"] == "cnn" and metadata["platform"] == "tensorflow_savedmodel"
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
            ("image", "FP32", [-1, 28, 28, 1])
        ]
        assert http.is_model_ready("cnn", model_version=version)
    config = http.get_model_config("cnn")
    assert config["max_batch_size"] == 0 and [int(d) for d in config["input"][0]["dims"]] == [-1, 28, 28, 1]
    tensor = httpclient.InferInput("image", [2, 28, 28, 1], "FP32")
    tensor.set_data_from_numpy(_image())
    with pytest.raises(InferenceServerException) as missing:
        http.infer("cnn", [tensor], model_version="9")  # a version TF Serving does not have
    assert str(missing.value.status()) == "404"
    assert not http.is_model_ready("cnn", model_version="9")


def test_route_outputs_option_is_the_output_filter(addresses: tuple[str, str]) -> None:
    """A route's `outputs` option is sent as the output filter when the client names none: the route
    that names a real output answers with it, the one with a typo gets TF Serving's refusal."""
    rest, _ = addresses
    spec = SPECS["mlp"]
    (features,) = sample_inputs(spec, np.random.default_rng(5), 2)
    tensor = httpclient.InferInput(spec.inputs[0].name, list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    http = httpclient.InferenceServerClient(rest)
    result = http.infer("mlp", [tensor])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["logits"]
    with pytest.raises(InferenceServerException) as typo:
        http.infer("mlp", [tensor], model_version="typo")
    assert str(typo.value.status()) == "400" and "lgts" in typo.value.message()


def test_one_framework_down_leaves_the_others_models_ready(addresses: tuple[str, str]) -> None:
    """The dead TF Serving's model is not ready and answers 503; the JAX and live TF models stay ready."""
    rest, _ = addresses
    http = httpclient.InferenceServerClient(rest)
    assert http.is_server_ready()
    assert not http.is_model_ready("gone")
    assert http.is_model_ready("cnn") and http.is_model_ready("transformer")
    with pytest.raises(InferenceServerException) as down:
        _infer(http, httpclient, "gone")
    assert str(down.value.status()) == "503"
    np.testing.assert_array_equal(_infer(http, httpclient, "cnn").shape, (2, 10))

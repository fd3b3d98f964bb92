"""The `torchserve` backend kind against the real TorchServe the stack starts (token authorization on),
over gRPC and REST: answers, metadata, readiness, and the inference key: refused, then picked up again
from its file without a restart."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.backends.torchserve import TorchServeBackend
from gateway.errors import ErrorCode, GatewayError
from gateway.local_stack import LocalStack
from gateway.settings import TorchServeBackendSettings
from gateway.types import InferenceRequest, Tensor
from runtimes.examples.specs import SPECS, sample_inputs
from tests.integration.processes import gateway_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """A gateway with the stack's TorchServe behind it twice (gRPC, REST), both reading the inference key
    from a copy of TorchServe's key file that the test can spoil and mend."""
    if stack.torchserve is None:
        pytest.skip("torch or TorchServe is not installed: the stack runs without TorchServe")
    workdir: Path = tmp_path_factory.mktemp("ts-gateway")
    key_copy = workdir / "key_file.json"
    shutil.copy(stack.torchserve.command.key_file, key_copy)
    host = stack.ports.host
    backends: dict[str, Any] = {
        "ts-grpc": {
            "kind": "torchserve",
            "endpoints": [f"{host}:{stack.ports.torchserve_grpc}"],
            "inference_key_file": str(key_copy),
        },
        "ts-rest": {
            "kind": "torchserve",
            "protocol": "rest",
            "endpoints": [f"{host}:{stack.ports.torchserve_rest}"],
            "inference_key_file": str(key_copy),
        },
    }
    routes = [
        {"model": "mlp", "backend": "ts-grpc", "options": {"version": "1"}},
        {"model": "mlp", "version": "rest", "backend": "ts-rest", "options": {"version": "1"}},
    ]
    with gateway_process(workdir, backends, routes) as (rest, _grpc):
        yield rest, key_copy, stack.torchserve.command.key_file


def _infer(rest: str, version: str = "") -> np.ndarray:
    spec = SPECS["mlp"]
    (features,) = sample_inputs(spec, np.random.default_rng(11), 4)
    tensor = httpclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    out: np.ndarray = (
        httpclient.InferenceServerClient(rest)
        .infer("mlp", [tensor], model_version=version)
        .as_numpy("logits")
    )
    return out


def test_grpc_and_rest_transports_agree(gateway: tuple[str, Path, Path]) -> None:
    """The same archive through both transports: identical answers; metadata is the archive's signature."""
    rest, _, _ = gateway
    over_grpc = _infer(rest)
    assert over_grpc.shape == (4, 4)
    np.testing.assert_array_equal(_infer(rest, "rest"), over_grpc)
    client = httpclient.InferenceServerClient(rest)
    metadata = client.get_model_metadata("mlp")
    assert metadata["platform"] == "pytorch_torchserve"
    assert [(t["name"], t["shape"]) for t in metadata["inputs"]] == [("features", [-1, 16])]
    assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "rest")


def test_a_refused_key_is_the_backends_fault_and_a_mended_file_is_picked_up(
    gateway: tuple[str, Path, Path],
) -> None:
    """A wrong key: 502 naming the backend (never the client's 4xx); once the file holds the right key
    again, the next request succeeds without restarting the gateway."""
    rest, key_copy, real_key_file = gateway
    good = key_copy.read_text()
    spoiled = json.loads(good)
    spoiled["inference"]["key"] = "not-the-key"
    key_copy.write_text(json.dumps(spoiled))
    time.sleep(1.2)  # the file is looked at again at most once a second
    try:
        with pytest.raises(InferenceServerException) as refused:
            _infer(rest)
        assert str(refused.value.status()) == "502"
        assert "refused the gateway's inference key" in refused.value.message()
    finally:
        shutil.copy(real_key_file, key_copy)
    assert _infer(rest).shape == (4, 4)  # read again at the refusal: no restart, no wait


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
async def test_the_real_handlers_refusals_map_to_the_clients_codes(stack: LocalStack, protocol: str) -> None:
    """Straight from the backend (no gateway validation in front): the handler's 400 for a tensor that does
    not fit the signature is INVALID_ARGUMENT naming it over both transports (TorchServe 0.12 sends it as
    an OK reply over gRPC), and an unknown model is NOT_FOUND."""
    if stack.torchserve is None:
        pytest.skip("torch or TorchServe is not installed: the stack runs without TorchServe")
    port = stack.ports.torchserve_grpc if protocol == "grpc" else stack.ports.torchserve_rest
    endpoint = f"{stack.ports.host}:{port}"
    settings = TorchServeBackendSettings(
        kind="torchserve",
        protocol=protocol,  # type: ignore[arg-type]
        endpoints=[endpoint],
        inference_key_file=str(stack.torchserve.command.key_file),
    )
    backend = TorchServeBackend("ts", settings)
    wrong = np.zeros((1, 3), dtype=np.float32)  # the model takes 16 features
    try:
        with pytest.raises(GatewayError) as refused:
            await backend.infer(
                InferenceRequest("mlp", [Tensor("features", "FP32", wrong.shape, wrong)]), endpoint, 30
            )
        assert refused.value.code is ErrorCode.INVALID_ARGUMENT and "features" in refused.value.message
        with pytest.raises(GatewayError) as missing:
            await backend.infer(
                InferenceRequest("nope", [Tensor("features", "FP32", wrong.shape, wrong)]), endpoint, 30
            )
        assert missing.value.code is ErrorCode.NOT_FOUND
    finally:
        await backend.close()

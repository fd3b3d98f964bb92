"""Malformed requests on the wire get the protocol's error body and status, never a traceback or a 422."""

from __future__ import annotations

import struct
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest

from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc

pytestmark = pytest.mark.integration


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"http://{url}/v2/models/transformer/infer", content=body, headers=headers or {}, timeout=30
    )


def _tokens_input(**overrides: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": "tokens",
        "shape": [1, 16],
        "datatype": "INT32",
        "data": list(range(16)),
    }
    tensor.update(overrides)
    return tensor


BAD_JSON_BODIES = {
    "invalid-json": (b"{not json", "json"),
    "no-inputs": (orjson.dumps({"id": "x"}), "inputs"),
    "negative-dim": (orjson.dumps({"inputs": [_tokens_input(shape=[-1, 16])]}), "tokens"),
    "size-mismatch": (orjson.dumps({"inputs": [_tokens_input(data=[1, 2, 3])]}), "tokens"),
    "unknown-datatype": (orjson.dumps({"inputs": [_tokens_input(datatype="INT33")]}), "INT33"),
    "missing-datatype": (
        orjson.dumps({"inputs": [{"name": "tokens", "shape": [1, 16], "data": list(range(16))}]}),
        "datatype",
    ),
    "overflowing-dim": (orjson.dumps({"inputs": [_tokens_input(shape=[2**63, 16])]}), "tokens"),
    "unknown-input": (orjson.dumps({"inputs": [_tokens_input(name="words")]}), "words"),
    "empty-with-huge-dim": (
        orjson.dumps({"inputs": [_tokens_input(shape=[0, 2**63 - 1], data=[])]}),
        "tokens",
    ),
    "too-many-dims": (orjson.dumps({"inputs": [_tokens_input(shape=[1] * 100, data=[1])]}), "tokens"),
}


@pytest.mark.parametrize("case", list(BAD_JSON_BODIES))
def test_malformed_rest_request_is_400_with_error_body(case: str, gateway_http: str) -> None:
    """Each malformed JSON request is a 400 whose `{"error": ...}` names what is wrong."""
    body, named = BAD_JSON_BODIES[case]
    response = _post(gateway_http, body, {"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert named.lower() in error.lower()
    assert "Traceback" not in error and "detail" not in response.json()


def test_inconsistent_binary_size_is_400(gateway_http: str) -> None:
    """A binary_data_size that disagrees with the bytes sent is a 400 naming the input."""
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "tokens",
                    "shape": [1, 16],
                    "datatype": "INT32",
                    "parameters": {"binary_data_size": 64},
                }
            ]
        }
    )
    body = header + np.arange(8, dtype=np.int32).tobytes()  # 32 bytes, not 64
    response = _post(gateway_http, body, {"inference-header-content-length": str(len(header))})
    assert response.status_code == 400
    assert "tokens" in response.json()["error"]


def test_raw_binary_request_is_served(gateway_http: str) -> None:
    """Inference-Header-Content-Length: 0 sends one input's raw bytes; the answer comes back binary."""
    tokens = np.arange(16, dtype=np.int32)
    response = _post(gateway_http, tokens.tobytes(), {"inference-header-content-length": "0"})
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:json_length])
    output = header["outputs"][0]
    assert output["name"] == "embedding" and output["shape"] == [1, 32]
    assert len(response.content) - json_length == output["parameters"]["binary_data_size"] == 32 * 4


def test_body_over_limit_is_413(gateway_http: str) -> None:
    """A body declared larger than max_request_bytes is refused with 413 before it is read."""
    too_big = b"\0" * (64 * 1024 * 1024 + 1)
    response = _post(gateway_http, too_big, {"content-type": "application/octet-stream"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_unknown_path_is_protocol_404(gateway_http: str) -> None:
    """An unknown endpoint answers 404 with the protocol's error body, not FastAPI's `detail`."""
    response = httpx.get(f"http://{gateway_http}/v2/nothing/here", timeout=10)
    assert response.status_code == 404
    assert "error" in response.json()


def _grpc_stub(url: str) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(url, options=[("grpc.max_send_message_length", 128 * 1024 * 1024)])
    return channel, inference_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_grpc_raw_size_mismatch_is_invalid_argument(gateway_grpc: str) -> None:
    """gRPC raw_input_contents of the wrong size is INVALID_ARGUMENT naming the input."""
    channel, stub = _grpc_stub(gateway_grpc)
    request = pb.ModelInferRequest(model_name="transformer")
    request.inputs.add(name="tokens", datatype="INT32", shape=[1, 16])
    request.raw_input_contents.append(struct.pack("<4i", 1, 2, 3, 4))
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tokens" in info.value.details()


def test_grpc_message_over_limit_is_resource_exhausted(gateway_grpc: str) -> None:
    """A gRPC message larger than the configured limit is RESOURCE_EXHAUSTED."""
    channel, stub = _grpc_stub(gateway_grpc)
    request = pb.ModelInferRequest(model_name="transformer")
    request.inputs.add(name="tokens", datatype="INT32", shape=[1, 16])
    request.raw_input_contents.append(b"\0" * (64 * 1024 * 1024 + 16))
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_health_and_reflection(gateway_grpc: str) -> None:
    """grpc.health.v1 reports SERVING and reflection lists the inference service."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(gateway_grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for answer in answers for s in answer.list_services_response.service}
        assert "inference.GRPCInferenceService" in names
        # And the service's file descriptor resolves (what grpcurl needs to build requests).
        answers = reflection.ServerReflectionInfo(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(
                        file_containing_symbol="inference.GRPCInferenceService"
                    )
                ]
            )
        )
        first = next(iter(answers))
        assert first.file_descriptor_response.file_descriptor_proto


LONG_NAME = "n" * 100_000


@pytest.mark.parametrize("server", ["gateway_grpc", "runtime_grpc"])
def test_grpc_long_names_are_clipped_in_status_details(server: str, request: pytest.FixtureRequest) -> None:
    """A 100 KB model or input name comes back as the real error (NOT_FOUND / INVALID_ARGUMENT) with its
    name clipped, not as RESOURCE_EXHAUSTED from the client's 16 KiB metadata limit."""
    channel, stub = _grpc_stub(request.getfixturevalue(server))
    unknown_model = pb.ModelInferRequest(model_name=LONG_NAME)
    unknown_input = pb.ModelInferRequest(model_name="transformer")
    unknown_input.inputs.add(name=LONG_NAME, datatype="INT32", shape=[1, 16])
    unknown_input.raw_input_contents.append(b"\0" * 64)
    cases = [
        (stub.ModelInfer, unknown_model, grpc.StatusCode.NOT_FOUND),
        (stub.ModelMetadata, pb.ModelMetadataRequest(name=LONG_NAME), grpc.StatusCode.NOT_FOUND),
        (stub.ModelInfer, unknown_input, grpc.StatusCode.INVALID_ARGUMENT),
    ]
    with channel:
        for call, message, code in cases:
            with pytest.raises(grpc.RpcError) as info:
                call(message, timeout=30)
            assert info.value.code() == code, info.value.details()
            assert "(100000 characters)" in info.value.details()
            assert len(info.value.details()) < 1024


@pytest.mark.parametrize("server", ["gateway_http", "runtime_http"])
def test_rest_long_output_name_is_clipped_in_the_error(server: str, request: pytest.FixtureRequest) -> None:
    """A 100 KB requested output name is a 400 whose body quotes the start of it, not the whole name."""
    body = orjson.dumps({"inputs": [_tokens_input()], "outputs": [{"name": LONG_NAME}]})
    response = _post(request.getfixturevalue(server), body, {"content-type": "application/json"})
    assert response.status_code == 400
    assert "(100000 characters)" in response.json()["error"]
    assert len(response.content) < 1024


@pytest.mark.parametrize("server", ["gateway_http", "runtime_http"])
def test_unserved_extensions_are_refused_and_not_advertised(
    server: str, request: pytest.FixtureRequest
) -> None:
    """A request asking for shared memory is a 400 naming the parameter; /v2 lists neither shared memory
    nor classification among its extensions."""
    url = request.getfixturevalue(server)
    tokens = _tokens_input(parameters={"shared_memory_region": "input0"})
    response = _post(url, orjson.dumps({"inputs": [tokens]}), {"content-type": "application/json"})
    assert response.status_code == 400
    assert "shared_memory_region" in response.json()["error"]
    extensions = httpx.get(f"http://{url}/v2", timeout=10).json()["extensions"]
    assert not [e for e in extensions if "shared_memory" in e or "classification" in e]

"""TorchServeBackend over gRPC against an in-process server that behaves as TorchServe 0.12's gRPC API
does: the handler's per-request refusals arrive as a successful reply carrying the error body, an unknown
model is INTERNAL naming ModelNotFoundException, a wrong key is PERMISSION_DENIED."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from gateway.backends.torchserve import TorchServeBackend
from gateway.codecs.torchserve import payload
from gateway.errors import BackendError, ErrorCode, GatewayError
from gateway.proto.torchserve import inference_pb2 as pb
from gateway.settings import TorchServeBackendSettings
from gateway.types import InferenceRequest, Tensor

SERVICE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"


class FakeTorchServe(grpc.GenericRpcHandler):
    """Model "double" doubles its input `x`; input `boom` makes the model fail; anything else is refused."""

    key = "k"

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        if details.method == f"/{SERVICE}/Predictions":
            return grpc.unary_unary_rpc_method_handler(self.predictions)
        if details.method == f"/{SERVICE}/Ping":
            return grpc.unary_unary_rpc_method_handler(self.ping)
        return None

    async def _check_key(self, context: Any) -> None:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {self.key}":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "Token Authorization failed")

    async def predictions(self, data: bytes, context: Any) -> bytes:
        await self._check_key(context)
        request = pb.PredictionsRequest.FromString(data)
        if request.model_name != "double":
            message = f"Model not found: {request.model_name}\\norg.pytorch.serve.ModelNotFoundException"
            await context.abort(grpc.StatusCode.INTERNAL, message)
        tensors, _outputs, _metadata = payload.parse_request(request.input["data"])
        if tensors[0].name == "boom":
            body = payload.error_body(500, "ModelError", "RuntimeError")
        elif tensors[0].name != "x":
            body = payload.error_body(400, "InvalidRequest", "model 'double' has no input 'z'")
        else:
            x = tensors[0]
            body = payload.encode_response([Tensor("y", "FP32", x.shape, x.data * 2)])
        return pb.PredictionResponse(prediction=body).SerializeToString()  # status OK, as TorchServe does

    async def ping(self, data: bytes, context: Any) -> bytes:
        await self._check_key(context)
        return pb.TorchServeHealthResponse(health='{"status": "Healthy"}').SerializeToString()


@pytest.fixture
async def served() -> AsyncIterator[tuple[TorchServeBackend, str, FakeTorchServe]]:
    fake = FakeTorchServe()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((fake,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    settings = TorchServeBackendSettings(kind="torchserve", endpoints=[address], inference_key="k")  # type: ignore[arg-type]
    backend = TorchServeBackend("ts", settings)
    try:
        yield backend, address, fake
    finally:
        await backend.close()
        await server.stop(None)


def request(name: str = "x", model: str = "double") -> InferenceRequest:
    x = np.ones((2, 3), dtype=np.float32)
    return InferenceRequest(model, [Tensor(name, "FP32", x.shape, x)])


async def test_answer_and_ping(served: tuple[TorchServeBackend, str, FakeTorchServe]) -> None:
    """A tensor payload answers; Ping says Healthy."""
    backend, address, _ = served
    assert (await backend.infer(request(), address, 5.0)).outputs[0].data.tolist() == [[2, 2, 2]] * 2
    assert await backend.ready(address) is True


async def test_the_handlers_refusal_in_an_ok_reply_is_the_clients(
    served: tuple[TorchServeBackend, str, FakeTorchServe],
) -> None:
    """A 400 body in a successful reply is INVALID_ARGUMENT with the handler's message; a 500 the model's."""
    backend, address, _ = served
    with pytest.raises(GatewayError) as refused:
        await backend.infer(request(name="z"), address, 5.0)
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT and "no input 'z'" in refused.value.message
    with pytest.raises(BackendError, match=r"the model failed \(ModelError\)"):
        await backend.infer(request(name="boom"), address, 5.0)


async def test_an_unknown_model_is_not_found(served: tuple[TorchServeBackend, str, FakeTorchServe]) -> None:
    """INTERNAL naming ModelNotFoundException is NOT_FOUND, for infer and for model readiness."""
    backend, address, _ = served
    for call in (
        backend.infer(request(model="nope"), address, 5.0),
        backend.model_ready("nope", "", address),
    ):
        with pytest.raises(GatewayError) as missing:
            await call
        assert missing.value.code is ErrorCode.NOT_FOUND


async def test_a_wrong_key_is_the_backends_failure(
    served: tuple[TorchServeBackend, str, FakeTorchServe],
) -> None:
    """PERMISSION_DENIED with no other key to try: a BackendError naming the key, and Ping is not ready."""
    backend, address, fake = served
    fake.key = "another"
    with pytest.raises(BackendError, match="refused the gateway's inference key"):
        await backend.infer(request(), address, 5.0)
    assert await backend.ready(address) is False

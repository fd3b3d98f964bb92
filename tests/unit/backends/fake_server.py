"""A real in-process grpc.aio OIP server with a tiny fake model, for backend and app tests.

Model `double` (input `x` FP32 [-1, 3] -> output `y` = 2x) works; the other model names fail the way
their name says, so error mapping can be tested against real gRPC statuses.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np

from gateway.codecs.v2.protobuf import request_from_proto, response_to_proto
from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc
from gateway.types import InferenceResponse, Tensor


class FakeModelServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
    """`GRPCInferenceService` with one working model and scripted failures."""

    def __init__(self) -> None:
        self.ready = True
        self.infer_calls = 0

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="fake", version="0", extensions=[])

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == "double")

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        if request.name != "double":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{request.name}' not found")
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name="double",
            platform="fake",
            versions=["1"],
            inputs=[tensor(name="x", datatype="FP32", shape=[-1, 3])],
            outputs=[tensor(name="y", datatype="FP32", shape=[-1, 3])],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        if request.name != "double":
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no model configuration here")
        return pb.ModelConfigResponse(
            config=pb.ModelConfig(
                name="double",
                platform="fake",
                max_batch_size=8,
                input=[pb.ModelInput(name="x", data_type=pb.TYPE_FP32, dims=[3])],
                output=[pb.ModelOutput(name="y", data_type=pb.TYPE_FP32, dims=[3])],
            )
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        self.infer_calls += 1
        name = request.model_name
        if name == "invalid":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'x' must have 3 columns")
        if name == "crash":
            await context.abort(grpc.StatusCode.INTERNAL, "Traceback (most recent call last): secret.py")
        if name == "unavailable":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "model warming up at 10.1.2.3")
        if name == "verbose":  # details past gRPC's default 8 KiB metadata limit
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'x': " + "v" * 20_000)
        if name == "flood":  # details past any limit a client should take
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "f" * 400_000)
        if name == "slow":
            await asyncio.sleep(5)
        if name == "garbage":
            return pb.ModelInferResponse(
                model_name=name, outputs=[pb.ModelInferResponse.InferOutputTensor(name="y", datatype="NOPE")]
            )
        if name != "double":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{name}' not found")
        decoded = request_from_proto(request)
        x = decoded.inputs[0].data
        y = Tensor("y", "FP32", x.shape, (x * 2).astype(np.float32))
        return response_to_proto(InferenceResponse(name, [y], "1", decoded.id), decoded)


async def start_fake_server(servicer: FakeModelServicer) -> tuple[grpc.aio.Server, str]:
    """Start a grpc.aio server for `servicer` on an ephemeral port; returns it and its address."""
    server = grpc.aio.server()
    inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"

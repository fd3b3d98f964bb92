"""`InFlightLimit`: one count of inference requests per process, shared by the REST and gRPC listeners."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import numpy as np
import orjson
import pytest

from gateway.api.admission import InFlightLimit
from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
from gateway.api.rest.app import create_app
from gateway.api.serving import bind_socket
from gateway.codecs.v2.protobuf import request_to_proto
from gateway.errors import ErrorCode, Overloaded
from gateway.proto import inference_pb2_grpc
from gateway.types import InferenceRequest, RequestContext, Tensor
from tests.unit.api.fakes import FakeServer


def test_refusal_is_counted_and_a_place_comes_back_after_the_block() -> None:
    server = FakeServer()
    limit = InFlightLimit(1)
    with limit.admit(server, "m", RequestContext("grpc")):
        with pytest.raises(Overloaded) as info, limit.admit(server, "m", RequestContext("rest")):
            pass
        assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    with limit.admit(server, "m", RequestContext("grpc")):
        assert limit.in_flight == 1
    assert limit.in_flight == 0
    assert server.rejected == [("m", "rest", "RESOURCE_EXHAUSTED")]


def test_zero_is_no_limit_and_negative_is_refused() -> None:
    limit = InFlightLimit(0)
    with (
        limit.admit(FakeServer(), "m", RequestContext("grpc")),
        limit.admit(FakeServer(), "m", RequestContext("grpc")),
    ):
        assert limit.in_flight == 2
    with pytest.raises(ValueError, match="in-flight limit"):
        InFlightLimit(-1)


async def test_one_limit_spans_both_listeners() -> None:
    """With one place shared by the listeners, a gRPC inference in flight makes a REST one get 429."""
    server = FakeServer(delay_s=0.3)
    limit = InFlightLimit(1)
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    grpc_server = await start_grpc_server(server, "127.0.0.1", port, reuse_port=True, limit=limit)
    app = create_app(server, limit=limit)
    x = np.zeros(4, dtype=np.float32)
    message = request_to_proto(InferenceRequest("m", [Tensor("x", "FP32", x.shape, x)]))
    body = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]})
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client,
        ):
            first = asyncio.ensure_future(
                inference_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=5)
            )
            await asyncio.wait_for(server.called.wait(), 5)
            refused = await client.post("/v2/models/m/infer", content=body)
            assert refused.status_code == 429 and "max_in_flight 1" in refused.json()["error"]
            await first
            assert (await client.post("/v2/models/m/infer", content=body)).status_code == 200
    finally:
        await stop_grpc_server(grpc_server, 0)
        held.close()

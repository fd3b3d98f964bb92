"""The gRPC listener started by `start_grpc_server`, called over a real channel."""

from __future__ import annotations

import asyncio
import socket

import grpc
import numpy as np
import pytest

from gateway.api.admission import InFlightLimit
from gateway.api.grpc.server import start_grpc_server, stop_grpc_server
from gateway.api.serving import bind_socket
from gateway.codecs.v2.protobuf import request_to_proto, response_from_proto
from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc
from gateway.types import InferenceRequest, Tensor
from tests.unit.api.fakes import FakeServer


def _request(elements: int) -> pb.ModelInferRequest:
    x = np.zeros(elements, dtype=np.float32)
    return request_to_proto(InferenceRequest("m", [Tensor("x", "FP32", x.shape, x)]))


async def test_responses_are_not_capped_by_the_request_limit() -> None:
    """A small request whose answer is larger than max_message_bytes is answered, not RESOURCE_EXHAUSTED."""
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    server = await start_grpc_server(
        FakeServer(output_elements=4096), "127.0.0.1", port, max_message_bytes=1024, reuse_port=True
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            response = response_from_proto(await stub.ModelInfer(_request(4), timeout=5))
            assert response.outputs[0].shape == (4096,)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(_request(1024), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await stop_grpc_server(server, 0)
        held.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_host_binds() -> None:
    """An IPv6 listener host as the settings write it (`::1`, no brackets) binds and serves."""
    held = bind_socket("::1", 0, reuse_port=True)
    port = held.getsockname()[1]
    server = await start_grpc_server(FakeServer(), "::1", port, reuse_port=True)
    try:
        async with grpc.aio.insecure_channel(f"[::1]:{port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerLive(pb.ServerLiveRequest(), timeout=5)).live
    finally:
        await stop_grpc_server(server, 0)
        held.close()


async def test_undecodable_grpc_request_is_reported_as_rejected() -> None:
    """A raw input of the wrong size is INVALID_ARGUMENT and reported to the server as a rejection."""
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    fake = FakeServer()
    server = await start_grpc_server(fake, "127.0.0.1", port, reuse_port=True)
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[4])
    request.raw_input_contents.append(b"\0" * 3)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await stop_grpc_server(server, 0)
        held.close()
    assert fake.rejected == [("m", "grpc", "INVALID_ARGUMENT")]


async def test_health_reports_not_serving_when_the_server_stops() -> None:
    """A health watcher sees SERVING, then NOT_SERVING once stop begins (before the port closes)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    server = await start_grpc_server(FakeServer(), "127.0.0.1", port, reuse_port=True)
    seen: list[int] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            async for update in watch:
                seen.append(update.status)
                if update.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            stopping = asyncio.create_task(stop_grpc_server(server, 1.0))
            async for update in watch:
                seen.append(update.status)
                if update.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
            await stopping
    finally:
        held.close()
    assert seen[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health_pb2.HealthCheckResponse.SERVING in seen


@pytest.mark.parametrize(("age_s", "reconnects"), [(0.2, True), (0.0, False)])
async def test_max_connection_age_makes_clients_reconnect(age_s: float, reconnects: bool) -> None:
    """With a connection max age, an idle client connection is closed after it (GOAWAY: the channel
    goes back to IDLE and will reconnect, re-resolving DNS); with 0 it stays up."""
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    server = await start_grpc_server(
        FakeServer(), "127.0.0.1", port, reuse_port=True, max_connection_age_s=age_s
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            await stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            await asyncio.sleep(1.0)
            assert (channel.get_state() != grpc.ChannelConnectivity.READY) is reconnects
            assert (await stub.ServerLive(pb.ServerLiveRequest(), timeout=5)).live
    finally:
        await stop_grpc_server(server, 0)
        held.close()


async def test_grpc_requests_past_max_in_flight_are_resource_exhausted() -> None:
    """With max_in_flight 1 and one inference running, a second call is RESOURCE_EXHAUSTED, readiness
    still answers, and the refusal is counted as rejected."""
    held = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = held.getsockname()[1]
    fake = FakeServer(delay_s=0.3)
    server = await start_grpc_server(fake, "127.0.0.1", port, reuse_port=True, limit=InFlightLimit(1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            first = asyncio.ensure_future(stub.ModelInfer(_request(4), timeout=5))
            await asyncio.wait_for(fake.called.wait(), 5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(_request(4), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_in_flight 1" in (info.value.details() or "")
            assert (await stub.ServerReady(pb.ServerReadyRequest(), timeout=5)).ready
            assert response_from_proto(await first).outputs[0].shape == (4,)
    finally:
        await stop_grpc_server(server, 0)
        held.close()
    assert fake.rejected == [("m", "grpc", "RESOURCE_EXHAUSTED")]

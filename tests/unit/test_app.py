"""The composition root in-process: the whole stack on ephemeral ports against a fake OIP server."""

from __future__ import annotations

import asyncio
import re

import grpc
import httpx
import numpy as np
import pytest

from gateway.api.serving import bind_socket
from gateway.app import run
from gateway.codecs.v2.protobuf import request_to_proto, response_from_proto
from gateway.proto import inference_pb2_grpc
from gateway.settings import GatewaySettings
from gateway.types import InferenceRequest, Tensor
from tests.unit.backends.fake_server import FakeModelServicer, start_fake_server


async def test_run_serves_rest_grpc_metrics_and_stops_gracefully() -> None:
    """`run` announces the ready line, serves REST, gRPC and /metrics, and returns once `stop` is set."""
    servicer = FakeModelServicer()
    backend_server, backend_address = await start_fake_server(servicer)
    settings = GatewaySettings.model_validate(
        {
            "listeners": {
                "rest": {"host": "127.0.0.1", "port": 0},
                "grpc": {"host": "127.0.0.1", "port": 0},
                "metrics": {"host": "127.0.0.1", "port": 0},
                "shutdown_grace_s": 1,
            },
            "backends": {"jax": {"kind": "v2", "endpoints": [backend_address]}},
            "routes": [{"model": "cnn", "backend": "jax", "backend_model": "double"}],
        }
    )
    stop = asyncio.Event()
    lines: list[str] = []
    task = asyncio.create_task(run(settings, stop=stop, on_ready=lines.append))
    try:
        while not lines:
            assert not task.done(), task.exception()
            await asyncio.sleep(0.01)
        match = re.fullmatch(
            r"gateway ready rest=127\.0\.0\.1:(\d+) grpc=127\.0\.0\.1:(\d+) metrics=127\.0\.0\.1:(\d+)",
            lines[0],
        )
        assert match, lines[0]
        rest_port, grpc_port, metrics_port = (int(p) for p in match.groups())
        assert 0 not in (rest_port, grpc_port, metrics_port)

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{rest_port}", trust_env=False) as http:
            assert (await http.get("/v2/health/ready")).status_code == 200
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
            reply = await http.post("/v2/models/cnn/infer", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["model_name"] == "cnn"
            assert reply.json()["outputs"][0]["data"] == [2, 4, 6]

        x = np.ones((2, 3), dtype=np.float32)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            message = request_to_proto(InferenceRequest("cnn", [Tensor("x", "FP32", x.shape, x)]))
            response = response_from_proto(await stub.ModelInfer(message, timeout=5))
        assert response.model_name == "cnn"
        assert response.outputs[0].data.tolist() == [[2, 2, 2], [2, 2, 2]]

        async with httpx.AsyncClient(trust_env=False) as http:
            text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
        # A v2 backend whose config names no framework is labelled "oip".
        labels = 'backend="jax",code="OK",framework="oip",model="cnn"'
        assert f'gateway_requests_total{{{labels},protocol="rest",version=""}} 1.0' in text
        assert f'gateway_requests_total{{{labels},protocol="grpc",version=""}} 1.0' in text
        up = f'gateway_backend_up{{backend="jax",endpoint="{backend_address}",framework="oip"}} 1.0'
        assert up in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await backend_server.stop(None)


def test_bind_socket_shares_a_port_only_with_reuse_port() -> None:
    """Workers can bind the same port with SO_REUSEPORT; without it the second bind fails."""
    first = bind_socket("127.0.0.1", 0, reuse_port=True)
    first.listen()
    port = first.getsockname()[1]
    try:
        second = bind_socket("127.0.0.1", port, reuse_port=True)
        second.close()
        with pytest.raises(OSError):
            bind_socket("127.0.0.1", port, reuse_port=False).close()
    finally:
        first.close()

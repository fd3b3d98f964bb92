"""What one large tensor costs the gateway: p50 of 16 MiB requests through it, against the backend direct.

    .venv/bin/python bench/large_tensor.py [--mib 16] [--calls 50]

An echo model server (this project's gRPC listener over a server that answers its input as output) is
started on an ephemeral port, and the gateway is started in front of it (a `v2` gRPC backend). The same
FP32 request of `--mib` MiB is sent alternately to the echo server and through the gateway, over gRPC
(raw contents) and over REST (binary extension), `--calls` times each after a warm-up; the answer, as
large as the request, comes back each time. It prints the p50 of each and the gateway's added p50, the
figure that per-call copies and serializations of the tensor show up in, and the CPU time the gateway
process spent per call (from /proc, summed over the calls through it), which other load on the machine
disturbs far less than the latency.

To compare two versions of the code, run it from each checkout (`PYTHONPATH=<checkout>` and that
checkout as the working directory); the echo server and the gateway run the checkout's code.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import yaml

sys.path.insert(0, str(Path.cwd()))

from cpu_per_request import process_cpu_s  # bench/, the script's own directory

from gateway.local_stack import ManagedProcess, free_ports
from gateway.proto import inference_pb2 as pb
from gateway.types import InferenceRequest, InferenceResponse, RequestContext, Tensor
from tests.unit.api.fakes import FakeServer  # the listeners' stub: model "m", x -> y FP32

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
MODEL = "m"


class EchoServer(FakeServer):
    """The unit tests' stub server, answering its input `x` as output `y` (no copy)."""

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
        x = request.inputs[0]
        return InferenceResponse(MODEL, [Tensor("y", "FP32", x.shape, x.data)], "1", request.id)


async def _serve_echo(port: int) -> None:
    from gateway.api.grpc.server import start_grpc_server

    listener = await start_grpc_server(EchoServer(), "127.0.0.1", port, max_message_bytes=1 << 30)
    print("echo ready", flush=True)
    await asyncio.Event().wait()
    del listener  # held until here: a grpc.aio server that is garbage-collected stops


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=float, default=16.0, help="request tensor size in MiB")
    parser.add_argument("--calls", type=int, default=50, help="measured calls per target and transport")
    parser.add_argument("--serve-echo", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(_serve_echo(args.serve_echo))
        return

    echo_port, rest, grpc_port, metrics = free_ports(4)
    workdir = Path(tempfile.mkdtemp(prefix="gateway-large-"))
    config = {
        "listeners": {
            "rest": {"host": "127.0.0.1", "port": rest},
            "grpc": {"host": "127.0.0.1", "port": grpc_port},
            "metrics": {"host": "127.0.0.1", "port": metrics},
            "max_request_bytes": 1 << 30,
        },
        "backends": {
            "echo": {"kind": "v2", "endpoints": [f"127.0.0.1:{echo_port}"], "max_message_bytes": 1 << 30}
        },
        "routes": [{"model": MODEL, "backend": "echo"}],
    }
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    echo = ManagedProcess("echo", [sys.executable, __file__, "--serve-echo", str(echo_port)], "echo ready")
    gateway = ManagedProcess(
        "gateway",
        [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(workdir / "gateway.yaml"),
            "--log-level",
            "warning",
        ],
        "gateway ready",
    )
    echo.start(echo=False)
    try:
        gateway.start(echo=False)
        try:
            assert gateway.proc is not None
            _measure(args.mib, args.calls, echo_port, grpc_port, rest, gateway.proc.pid)
        finally:
            gateway.stop()
    finally:
        echo.stop()


def _measure(
    mib: float, calls: int, echo_port: int, gateway_grpc: int, gateway_rest: int, gateway_pid: int
) -> None:
    elements = int(mib * 1024 * 1024) // 4
    x = np.random.default_rng(0).random(elements, dtype=np.float32)
    message = pb.ModelInferRequest(model_name=MODEL)
    message.inputs.add(name="x", datatype="FP32", shape=[elements])
    message.raw_input_contents.append(x.tobytes())
    grpc_body = message.SerializeToString()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [elements],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    rest_body = header + x.tobytes()
    rest_headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    options = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]
    targets = {"direct": ("127.0.0.1", echo_port, None), "gateway": ("127.0.0.1", gateway_grpc, gateway_rest)}
    channels = {
        name: grpc.insecure_channel(f"{h}:{p}", options=options) for name, (h, p, _) in targets.items()
    }
    rest_ports = {"direct": None, "gateway": gateway_rest}
    samples: dict[tuple[str, str], list[float]] = {}
    cpu: dict[str, float] = {"grpc": 0.0, "rest": 0.0}
    with httpx.Client(timeout=60) as client:
        for index in range(calls + 3):  # 3 warm-up rounds, then `calls` measured ones
            for name, channel in channels.items():
                call = channel.unary_unary(INFER_METHOD)
                cpu_before = process_cpu_s(gateway_pid)
                start = time.perf_counter()
                reply = call(grpc_body, timeout=60)
                elapsed = time.perf_counter() - start
                if name == "gateway" and index >= 3:
                    cpu["grpc"] += process_cpu_s(gateway_pid) - cpu_before
                if len(reply) < x.nbytes:
                    raise SystemExit(f"{name}: short gRPC answer ({len(reply)} bytes)")
                if index >= 3:
                    samples.setdefault((name, "grpc"), []).append(elapsed)
                port = rest_ports[name]
                if port is None:
                    continue
                cpu_before = process_cpu_s(gateway_pid)
                start = time.perf_counter()
                response = client.post(
                    f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer",
                    content=rest_body,
                    headers=rest_headers,
                )
                elapsed = time.perf_counter() - start
                if response.status_code != 200 or len(response.content) < x.nbytes:
                    raise SystemExit(
                        f"{name}: REST answered {response.status_code}: {response.content[:200]!r}"
                    )
                if index >= 3:
                    samples.setdefault((name, "rest"), []).append(elapsed)
                    cpu["rest"] += process_cpu_s(gateway_pid) - cpu_before
    for channel in channels.values():
        channel.close()
    direct = _p50_ms(samples[("direct", "grpc")])
    through = _p50_ms(samples[("gateway", "grpc")])
    print(f"large tensor: {x.nbytes / 2**20:.0f} MiB FP32 request and answer, p50 over {calls} calls")
    print(f"  gRPC direct to the backend p50  {direct:8.1f} ms")
    print(
        f"  gRPC through the gateway p50    {through:8.1f} ms   gateway-added {through - direct:7.1f} ms"
        f"   gateway CPU {cpu['grpc'] / calls * 1e3:6.1f} ms a call"
    )
    print(
        f"  REST binary through the gateway p50 {_p50_ms(samples[('gateway', 'rest')]):8.1f} ms"
        f"   gateway CPU {cpu['rest'] / calls * 1e3:6.1f} ms a call"
    )


if __name__ == "__main__":
    main()

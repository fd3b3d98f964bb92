"""The floor under the gateway's added latency: a grpc.aio proxy that does nothing but forward.

    python bench/bare_proxy.py --port 9001 --upstream 127.0.0.1:8011

`ModelInfer` calls are passed on as opaque bytes (no protobuf parsing, no routing, validation or
metrics) over one persistent channel, on uvloop as the gateway runs. What it adds
over calling the upstream directly is the cost of a Python gRPC hop itself; `bench/bench.py` measures it
beside the gateway in the same run, so the gateway's own share (its code, not grpc.aio's) can be read off
on any machine. Prints `bare-proxy ready` once it serves.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.api.serving import run_in_loop

SERVICE = "inference.GRPCInferenceService"


async def serve(port: int, upstream: str) -> None:
    channel = grpc.aio.insecure_channel(upstream)
    call = channel.unary_unary(f"/{SERVICE}/ModelInfer")

    async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return await call(request, timeout=context.time_remaining())  # type: ignore[no-any-return]

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(forward)}
            )
        ]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("bare-proxy ready", flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0)
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of an OIP gRPC server")
    args = parser.parse_args()
    try:
        run_in_loop(serve(args.port, args.upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

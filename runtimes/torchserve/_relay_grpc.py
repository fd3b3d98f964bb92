"""The key relay's gRPC side: a grpc.aio generic handler forwarding TorchServe's `InferenceAPIsService`
as raw bytes (nothing is parsed) over one channel to TorchServe on loopback.

Predictions and Ping are unary; StreamPredictions (server streaming) is forwarded too, retried after a
refused pod key only before its first message. StreamPredictions2 (bidirectional) and every other method
are UNIMPLEMENTED. The caller's metadata goes on, its `authorization` replaced with the pod's key; the
caller's deadline too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc

from gateway.backends.grpc_client import open_channel
from runtimes.torchserve.podkey import PodKey
from runtimes.torchserve.relay import KEY_REFUSED, CallerKey

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
SERVICE: Final = f"/{SERVICE_NAME}/"
_POD_KEY_REFUSED: Final = "TorchServe refused the pod's inference key"

Metadata = tuple[tuple[str, str | bytes], ...]


def forwarded_metadata(metadata: Any, pod_header: str) -> Metadata:
    """The caller's metadata as sent on to TorchServe: its key replaced with the pod's; gRPC's own
    (pseudo-headers, `grpc-*`, `user-agent`, `content-type`, `te`) left to the channel."""
    kept = tuple(
        (key, value)
        for key, value in (metadata or ())
        if key != "authorization"
        and not key.startswith((":", "grpc-"))
        and key not in ("user-agent", "content-type", "te")
    )
    return (*kept, ("authorization", pod_header))


def _caller_key(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _timeout(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


class GrpcRelay:
    """The forwarders of the inference service's methods, over one channel to TorchServe."""

    def __init__(self, caller: CallerKey, pod: PodKey, channel: grpc.aio.Channel) -> None:
        self._caller = caller
        self._pod = pod
        self._channel = channel

    def handler(self) -> grpc.GenericRpcHandler:
        """Predictions, Ping, StreamPredictions; gRPC answers UNIMPLEMENTED for any other method."""

        def unary(name: str) -> grpc.RpcMethodHandler:
            rpc = self._channel.unary_unary(SERVICE + name)
            # A partial (not a lambda): grpc.aio tells coroutine functions apart by inspection.
            return grpc.unary_unary_rpc_method_handler(functools.partial(self._call, rpc))

        stream = self._channel.unary_stream(SERVICE + "StreamPredictions")
        handlers = {
            "Predictions": unary("Predictions"),
            "Ping": unary("Ping"),
            "StreamPredictions": grpc.unary_stream_rpc_method_handler(
                functools.partial(self._stream, stream)
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    async def _admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if not self._caller.admits(_caller_key(context)):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, KEY_REFUSED)
        if not self._pod.header():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "TorchServe has not written its keys yet")

    async def _call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        request: bytes,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> bytes:
        await self._admit(context)
        async for pod_header in self._pod.attempts():
            metadata = forwarded_metadata(context.invocation_metadata(), pod_header)
            try:
                reply: bytes = await rpc(request, metadata=metadata, timeout=_timeout(context))
                return reply
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED:
                    await context.abort(exc.code(), exc.details() or "")
        await context.abort(grpc.StatusCode.UNAVAILABLE, _POD_KEY_REFUSED)
        raise AssertionError("unreachable: abort raises")

    async def _stream(
        self,
        rpc: grpc.aio.UnaryStreamMultiCallable[bytes, bytes],
        request: bytes,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[bytes]:
        await self._admit(context)
        async for pod_header in self._pod.attempts():
            metadata = forwarded_metadata(context.invocation_metadata(), pod_header)
            call = rpc(request, metadata=metadata, timeout=_timeout(context))
            sent = False
            try:
                async for reply in call:
                    sent = True
                    yield reply
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.PERMISSION_DENIED or sent:
                    await context.abort(exc.code(), exc.details() or "")
            finally:
                call.cancel()
        await context.abort(grpc.StatusCode.UNAVAILABLE, _POD_KEY_REFUSED)


async def start_grpc_relay(
    caller: CallerKey, pod: PodKey, upstream: str, host: str, port: int, max_message_bytes: int
) -> tuple[grpc.aio.Server, int, grpc.aio.Channel]:
    """A started gRPC server relaying to `upstream`, the port it bound, and its one channel to TorchServe
    (close it after the server stops)."""
    # The gateway's own channel (message limits, keepalive only during calls, room for long status
    # details); to one loopback address its round-robin balancing changes nothing.
    channel = open_channel(upstream, max_message_bytes)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers((GrpcRelay(caller, pod, channel).handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        await channel.close()
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, bound, channel

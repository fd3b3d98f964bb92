"""The Open Inference Protocol gRPC servicer (grpc.aio), over any `InferenceServer`.

Handlers are registered without gRPC's (de)serializers (`add_inference_service`): each takes the
request's wire bytes and returns the response's. Parsing here, not in grpc.aio, means a message that is
not a valid protobuf (truncated, a bad wire type, invalid UTF-8 in a string field) is the client's
INVALID_ARGUMENT with a message of ours, counted like any other refusal, rather than grpc.aio's UNKNOWN
naming a Python exception class; and the byte counters read the sizes of what was actually received and
sent instead of serializing each message once more (`ByteSize()` does that in the upb backend).

Each RPC converts with the v2 protobuf codec, calls the server and converts back; a `GatewayError`
becomes the call's status through the same `ErrorCode` table the REST listener uses. Unknown exceptions
are logged with their traceback and reported as INTERNAL with an opaque message.

`ModelStreamInfer` (Triton's bidirectional stream) runs each message as one `ModelInfer` would. A failed
message, one that does not parse included, is answered with `error_message` (prefixed with the request id
as Triton does, when there is one: tritonclient hands a stream callback only the message) and the stream
stays open for the others: gRPC frames each message, so a bad one cannot desynchronise those after it,
and ending the stream would throw away the answers of requests already accepted.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from gateway.api.admission import InFlightLimit, refused
from gateway.api.deadline import deadline_from
from gateway.api.grpc.streaming import DEFAULT_MAX_IN_FLIGHT, answer_stream
from gateway.codecs.v2 import protobuf as codec
from gateway.errors import ErrorCode, GatewayError, InvalidRequest
from gateway.proto import inference_pb2 as pb
from gateway.server import InferenceServer
from gateway.types import RequestContext

log = logging.getLogger(__name__)

SERVICE_NAME: Final = "inference.GRPCInferenceService"
MAX_DETAILS_BYTES: Final = 2048
_STATUS_BY_NUMBER: Final[dict[int, grpc.StatusCode]] = {s.value[0]: s for s in grpc.StatusCode}

M = TypeVar("M", bound=Message)
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = Callable[[Any, bytes, Context], Awaitable[bytes]]


def status_for(code: ErrorCode) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER[code.grpc_code]


def parse(message_type: type[M], data: bytes) -> M:
    """The message in `data`; `InvalidRequest` naming the type if the bytes are not one.

    The message names no parser internals: a client needs to know its bytes were not a valid message of
    this type, not which Python class said so.
    """
    try:
        return message_type.FromString(data)
    except DecodeError:
        raise InvalidRequest(f"request is not a valid {message_type.DESCRIPTOR.name}") from None


def grpc_details(message: str) -> str:
    """`message` as a call's status details: at most `MAX_DETAILS_BYTES` of UTF-8.

    gRPC sends details percent-encoded in trailing metadata, so a non-ASCII byte costs three, and the
    standard client refuses metadata past 16 KiB (its soft limit is 8 KiB): it would then report
    RESOURCE_EXHAUSTED instead of the error. A character count (`gateway.errors.clip`) does not bound
    that; the encoded size does.
    """
    data = message.encode()
    if len(data) <= MAX_DETAILS_BYTES:
        return message
    return f"{data[:MAX_DETAILS_BYTES].decode('utf-8', 'ignore')}... ({len(message)} characters)"


def reports_errors(handler: Handler) -> Handler:
    """Turn the core's errors into gRPC statuses at this one boundary."""

    @functools.wraps(handler)
    async def wrapper(self: Any, data: bytes, context: Context) -> bytes:
        try:
            return await handler(self, data, context)
        except GatewayError as exc:
            await context.abort(status_for(exc.code), grpc_details(exc.message))
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class InferenceServicer:
    """The `inference.GRPCInferenceService` methods, on wire bytes (see `add_inference_service`)."""

    def __init__(
        self,
        server: InferenceServer,
        *,
        stream_max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        limit: InFlightLimit | None = None,
    ) -> None:
        self._server = server
        self._stream_max_in_flight = stream_max_in_flight
        self._limit = limit if limit is not None else InFlightLimit()

    @reports_errors
    async def ServerLive(self, data: bytes, context: Context) -> bytes:
        parse(pb.ServerLiveRequest, data)
        return pb.ServerLiveResponse(live=await self._server.live()).SerializeToString()

    @reports_errors
    async def ServerReady(self, data: bytes, context: Context) -> bytes:
        parse(pb.ServerReadyRequest, data)
        return pb.ServerReadyResponse(ready=await self._server.ready()).SerializeToString()

    @reports_errors
    async def ModelReady(self, data: bytes, context: Context) -> bytes:
        request = parse(pb.ModelReadyRequest, data)
        ready = await self._server.model_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready).SerializeToString()

    @reports_errors
    async def ServerMetadata(self, data: bytes, context: Context) -> bytes:
        parse(pb.ServerMetadataRequest, data)
        return codec.server_metadata_to_proto(await self._server.server_metadata()).SerializeToString()

    @reports_errors
    async def ModelMetadata(self, data: bytes, context: Context) -> bytes:
        request = parse(pb.ModelMetadataRequest, data)
        metadata = await self._server.model_metadata(request.name, request.version)
        return codec.model_metadata_to_proto(metadata).SerializeToString()

    @reports_errors
    async def ModelConfig(self, data: bytes, context: Context) -> bytes:
        request = parse(pb.ModelConfigRequest, data)
        config = await self._server.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=codec.model_config_to_proto(config)).SerializeToString()

    @reports_errors
    async def ModelInfer(self, data: bytes, context: Context) -> bytes:
        call = RequestContext(protocol="grpc", received_at=time.monotonic())
        request = self._decode(data, call)
        response = (await self._infer(request, call, context)).SerializeToString()
        self._server.observe_transfer(call, len(data), len(response))
        return response

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterable[bytes], context: Context
    ) -> AsyncIterator[bytes]:
        async def answer(data: bytes) -> bytes:
            call = RequestContext(protocol="grpc", received_at=time.monotonic())
            request: pb.ModelInferRequest | None = None
            try:
                request = self._decode(data, call)
                response = await self._infer(request, call, context)
                reply = pb.ModelStreamInferResponse(infer_response=response).SerializeToString()
                self._server.observe_transfer(call, len(data), len(reply))
                return reply
            except GatewayError as exc:
                message = exc.message
            except Exception:
                log.exception("unhandled error in ModelStreamInfer")
                message = "internal error"
            return _stream_failure(message, request)

        async for reply in answer_stream(request_iterator, answer, max_in_flight=self._stream_max_in_flight):
            yield reply

    def _decode(self, data: bytes, call: RequestContext) -> pb.ModelInferRequest:
        """The `ModelInferRequest` in `data`; one that does not parse is counted as rejected, then raised."""
        try:
            return parse(pb.ModelInferRequest, data)
        except InvalidRequest as exc:
            raise refused(self._server, "", call, exc) from None  # no model name can be read from it

    async def _infer(
        self, request: pb.ModelInferRequest, call: RequestContext, context: Context
    ) -> pb.ModelInferResponse:
        """One inference. Raises `GatewayError`; one refused before the server saw it is counted first."""
        with self._limit.admit(self._server, request.model_name, call):
            try:
                inference_request = codec.request_from_proto(request)
                call.deadline = deadline_from(inference_request.parameters, context.time_remaining())
            except Exception as exc:
                raise refused(self._server, request.model_name, call, exc, request.model_version) from None
            response = await self._server.infer(inference_request, call)
            return codec.response_to_proto(response, inference_request)


def _stream_failure(message: str, request: pb.ModelInferRequest | None) -> bytes:
    """A stream's answer to a message that failed; `request` is None when the message did not parse."""
    reply = pb.ModelStreamInferResponse(error_message=message)
    if request is not None:
        if request.id:
            reply.error_message = f"[request id: {request.id}] {message}"
        reply.infer_response.model_name = request.model_name
        reply.infer_response.model_version = request.model_version
        reply.infer_response.id = request.id
    return reply.SerializeToString()


def add_inference_service(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` on `server` with no (de)serializers: its handlers take and return wire bytes."""
    unary = (
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelConfig",
    )
    handlers: dict[str, grpc.RpcMethodHandler] = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name)) for name in unary
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(servicer.ModelStreamInfer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)

"""The Open Inference Protocol gRPC servicer (grpc.aio), over any `InferenceServer`.

Each RPC converts with the v2 protobuf codec, calls the server and converts back; a `GatewayError`
becomes the call's status through the same `ErrorCode` table the REST listener uses. Unknown exceptions
are logged with their traceback and reported as INTERNAL with an opaque message.

`ModelStreamInfer` (Triton's bidirectional stream) runs each message as one `ModelInfer` would. A failed
message is answered with `error_message`, prefixed with the request id as Triton does (tritonclient hands
a stream callback only the message), and the stream stays open for the others.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc

from gateway.api.admission import InFlightLimit
from gateway.api.deadline import deadline_from
from gateway.api.grpc.streaming import DEFAULT_MAX_IN_FLIGHT, answer_stream
from gateway.codecs.v2 import protobuf as codec
from gateway.errors import ErrorCode, GatewayError
from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc
from gateway.server import InferenceServer
from gateway.types import RequestContext

log = logging.getLogger(__name__)

_STATUS_BY_NUMBER: Final[dict[int, grpc.StatusCode]] = {s.value[0]: s for s in grpc.StatusCode}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def status_for(code: ErrorCode) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER[code.grpc_code]


def _reports_errors(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn the core's errors into gRPC statuses at this one boundary."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await handler(self, request, context)
        except GatewayError as exc:
            await context.abort(status_for(exc.code), exc.message)
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class InferenceServicer(inference_pb2_grpc.GRPCInferenceServiceServicer):
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

    @_reports_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=await self._server.live())

    @_reports_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=await self._server.ready())

    @_reports_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=await self._server.model_ready(request.name, request.version))

    @_reports_errors
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return codec.server_metadata_to_proto(await self._server.server_metadata())

    @_reports_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        metadata = await self._server.model_metadata(request.name, request.version)
        return codec.model_metadata_to_proto(metadata)

    @_reports_errors
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = await self._server.model_config(request.name, request.version)
        return pb.ModelConfigResponse(config=codec.model_config_to_proto(config))

    @_reports_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        return await self._infer(request, context)

    async def ModelStreamInfer(  # type: ignore[override]  # an async generator, as grpc.aio allows
        self,
        request_iterator: AsyncIterable[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async def answer(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
            try:
                return pb.ModelStreamInferResponse(infer_response=await self._infer(request, context))
            except GatewayError as exc:
                message = exc.message
            except Exception:
                log.exception("unhandled error in ModelStreamInfer")
                message = "internal error"
            return pb.ModelStreamInferResponse(
                error_message=f"[request id: {request.id}] {message}" if request.id else message,
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version, id=request.id
                ),
            )

        async for response in answer_stream(
            request_iterator, answer, max_in_flight=self._stream_max_in_flight
        ):
            yield response

    async def _infer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        """One inference. Raises `GatewayError`; one refused before the server saw it is counted first."""
        call_context = RequestContext(protocol="grpc", received_at=time.monotonic())
        with self._limit.admit(self._server, request.model_name, call_context):
            try:
                inference_request = codec.request_from_proto(request)
                call_context.deadline = deadline_from(inference_request.parameters, context.time_remaining())
            except GatewayError as exc:
                self._server.observe_rejected(request.model_name, call_context, exc)
                raise
            response = codec.response_to_proto(
                await self._server.infer(inference_request, call_context), inference_request
            )
        self._server.observe_transfer(call_context, request.ByteSize(), response.ByteSize())
        return response

"""TorchServe's gRPC inference API on the gateway's gRPC listener, for any routed model (PROTOCOLS §3.4).

`org.pytorch.serve.grpc.inference.InferenceAPIsService`: `Predictions` takes the project's tensor
payload as the request's one input, under any key (TorchServe's handler reads the first input; the
project's clients use "data"), and answers the response payload, or for a metadata query the model's
signature JSON, as `prediction` (see `gateway.api.torchserve`); a request with no input or several is
INVALID_ARGUMENT, as the gateway cannot tell which one is the payload. `Ping` answers
`TorchServeHealthResponse{health: '{"status": "Healthy"}'}` while the gateway serves ("Unhealthy" when
not, still OK as TorchServe's Ping does). `StreamPredictions` (a server stream) is answered with one
PredictionResponse, the Predictions answer, and then ends: every backend behind the gateway answers a
request whole, and that is what TorchServe itself streams for a handler that does not stream; an error
ends the call with its status, as it does in TorchServe. `StreamPredictions2` (TorchServe's sequence
batching: a stateful session pinned to one worker) is UNIMPLEMENTED: the gateway routes each request on
its own and cannot keep a sequence on one replica. An `authorization` metadata entry, which TorchServe
clients send, is accepted and ignored: the gateway does not authenticate its clients.

Handlers take and return wire bytes, as the OIP servicer's do and for the same reasons (see
`gateway.api.grpc.servicer`): bytes that do not parse are the client's INVALID_ARGUMENT in our words, and
counted; errors map through the one `ErrorCode` table (details: the message alone, as TorchServe sends
its own). A Predictions call is admitted by the process's in-flight limit and each inference counted once,
under the protocol label `torchserve_grpc`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

import grpc
from google.protobuf import empty_pb2

from gateway.api.admission import InFlightLimit, refused
from gateway.api.deadline import deadline_from
from gateway.api.grpc.servicer import Context, parse, reports_errors, status_for
from gateway.api.torchserve import health_body, predictions
from gateway.codecs.torchserve import grpc_wire
from gateway.errors import ErrorCode, InvalidRequest
from gateway.proto.torchserve import inference_pb2 as pb
from gateway.server import InferenceServer
from gateway.types import RequestContext

SERVICE_NAME: Final = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
PROTOCOL: Final = "torchserve_grpc"


def _payload(message: pb.PredictionsRequest) -> bytes:
    """The request's one input: the payload."""
    if len(message.input) != 1:
        raise InvalidRequest(
            f"PredictionsRequest must have exactly one input, the payload (e.g. 'data'); "
            f"got {len(message.input)}"
        )
    (body,) = message.input.values()
    return body


class TorchServeServicer:
    """The TorchServe methods the gateway serves, on wire bytes (see `add_torchserve_service`)."""

    def __init__(self, server: InferenceServer, *, limit: InFlightLimit | None = None) -> None:
        self._server = server
        self._limit = limit if limit is not None else InFlightLimit()

    @reports_errors
    async def Predictions(self, data: bytes, context: Context) -> bytes:
        call = RequestContext(protocol=PROTOCOL, received_at=time.monotonic())
        try:
            message = parse(pb.PredictionsRequest, data)
        except InvalidRequest as exc:
            raise refused(self._server, "", call, exc) from None  # no model name can be read from it
        model = message.model_name
        with self._limit.admit(self._server, model, call):
            try:
                body = _payload(message)
                call.deadline = deadline_from({}, context.time_remaining())
            except Exception as exc:
                raise refused(self._server, model, call, exc, message.model_version) from None
            answer, is_json = await predictions(self._server, model, message.model_version, body, call)
        reply = grpc_wire.prediction_response(answer)  # one copy of the answer, not two
        if not is_json:  # a metadata query has no inference to account for
            self._server.observe_transfer(call, len(data), len(reply))
        return reply

    async def StreamPredictions(self, data: bytes, context: Context) -> AsyncIterator[bytes]:
        """The Predictions answer as a stream of one message (see the module docstring)."""
        yield await self.Predictions(data, context)

    @reports_errors
    async def Ping(self, data: bytes, context: Context) -> bytes:
        parse(empty_pb2.Empty, data)
        health = health_body(await self._server.ready()).decode()
        return pb.TorchServeHealthResponse(health=health).SerializeToString()


async def _refuse_sequences(requests: object, context: Context) -> None:
    await context.abort(
        status_for(ErrorCode.UNIMPLEMENTED),
        "StreamPredictions2 (sequence batching) is not supported by the gateway: "
        "use Predictions or StreamPredictions",
    )


def add_torchserve_service(servicer: TorchServeServicer, server: grpc.aio.Server) -> None:
    """Register TorchServe's inference service on `server` with no (de)serializers: the handlers take
    and return wire bytes."""
    handlers: dict[str, grpc.RpcMethodHandler] = {
        "Predictions": grpc.unary_unary_rpc_method_handler(servicer.Predictions),
        "Ping": grpc.unary_unary_rpc_method_handler(servicer.Ping),
        "StreamPredictions": grpc.unary_stream_rpc_method_handler(servicer.StreamPredictions),
        "StreamPredictions2": grpc.stream_stream_rpc_method_handler(_refuse_sequences),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)

"""TF Serving's gRPC API on the gateway's gRPC listener, for any routed model (PROTOCOLS §2.1).

`tensorflow.serving.PredictionService` (Predict, GetModelMetadata) and `tensorflow.serving.ModelService`
(GetModelStatus) over the `InferenceServer`, so TF Serving clients reach any backend unchanged. Classify,
Regress and MultiInference (tf.Example signatures, which OIP models do not have) and
HandleReloadConfigRequest (the gateway's config is its own file) answer UNIMPLEMENTED.

Handlers take and return wire bytes, as the OIP servicer's do and for the same reasons (see
`gateway.api.grpc.servicer`): bytes that do not parse are the client's INVALID_ARGUMENT in our words, and
counted; errors map through the one `ErrorCode` table. A Predict is admitted by the process's in-flight
limit and counted once, under the protocol label `tfserving_grpc` (a failure before inference, expected
or not, by `observe_rejected`). The gateway exposes one signature per model, `serving_default` (the
route's); a request naming another gets TF Serving's FAILED_PRECONDITION.

Replies carry typed `*_val` fields, as TF Serving's do by default; `typed=False` writes `tensor_content`
(its `--enable_serialization_as_tensor_content`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import grpc

from gateway.api.admission import InFlightLimit, refused
from gateway.api.deadline import deadline_from
from gateway.api.grpc.servicer import Context, parse, reports_errors, status_for
from gateway.api.tfserving import model_metadata, model_status
from gateway.codecs.tfserving.front import check_metadata_fields, check_signature
from gateway.codecs.tfserving.predict import predict_response, request_from_predict, spec_version
from gateway.errors import ErrorCode, GatewayError, InvalidRequest, clip
from gateway.proto.tfserving.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from gateway.server import InferenceServer
from gateway.types import RequestContext

log = logging.getLogger(__name__)

PREDICTION_SERVICE: Final = "tensorflow.serving.PredictionService"
MODEL_SERVICE: Final = "tensorflow.serving.ModelService"
SERVICE_NAMES: Final = (PREDICTION_SERVICE, MODEL_SERVICE)
PROTOCOL: Final = "tfserving_grpc"
_UNIMPLEMENTED: Final = {
    PREDICTION_SERVICE: ("Classify", "Regress", "MultiInference"),
    MODEL_SERVICE: ("HandleReloadConfigRequest",),
}


def _model(spec: model_pb2.ModelSpec) -> str:
    """The model a ModelSpec names; TF Serving's error when it names none."""
    if not spec.name:
        raise InvalidRequest("Missing ModelSpec")
    return spec.name


class TFServingServicer:
    """The TF Serving methods the gateway serves, on wire bytes (see `add_tfserving_services`)."""

    def __init__(
        self, server: InferenceServer, *, limit: InFlightLimit | None = None, typed: bool = True
    ) -> None:
        self._server = server
        self._limit = limit if limit is not None else InFlightLimit()
        self._typed = typed

    @reports_errors
    async def Predict(self, data: bytes, context: Context) -> bytes:
        call = RequestContext(protocol=PROTOCOL, received_at=time.monotonic())
        try:
            message = parse(predict_pb2.PredictRequest, data)
        except InvalidRequest as exc:
            raise refused(self._server, "", call, exc) from None  # no model name can be read from it
        model = message.model_spec.name
        with self._limit.admit(self._server, model, call):
            try:
                request, named = request_from_predict(message)
                signature = check_signature(named)
                call.deadline = deadline_from({}, context.time_remaining())
            except Exception as exc:  # counted once: it never reaches `infer` (a bug is INTERNAL)
                raise refused(self._server, model, call, exc, spec_version(message.model_spec)) from None
            response = await self._server.infer(request, call)
        try:
            reply = predict_response(response, signature, typed=self._typed).SerializeToString()
        except GatewayError:
            # Only an answer the server should never give (a BYTES element neither bytes nor str) gets
            # here: not the client's error, whatever the codec calls it. `infer` has counted it as OK.
            log.exception("the answer of model '%s' cannot be written as a PredictResponse", clip(model))
            raise GatewayError("internal error", code=ErrorCode.INTERNAL) from None
        self._server.observe_transfer(call, len(data), len(reply))
        return reply

    @reports_errors
    async def GetModelMetadata(self, data: bytes, context: Context) -> bytes:
        message = parse(get_model_metadata_pb2.GetModelMetadataRequest, data)
        model = _model(message.model_spec)
        check_metadata_fields(message.metadata_field)
        answer = await model_metadata(self._server, model, spec_version(message.model_spec))
        return answer.SerializeToString()

    @reports_errors
    async def GetModelStatus(self, data: bytes, context: Context) -> bytes:
        message = parse(get_model_status_pb2.GetModelStatusRequest, data)
        model = _model(message.model_spec)
        answer = await model_status(self._server, model, spec_version(message.model_spec))
        return answer.SerializeToString()


def _unimplemented(method: str) -> Callable[[bytes, Context], Awaitable[bytes]]:
    async def refuse(data: bytes, context: Context) -> bytes:
        await context.abort(
            status_for(ErrorCode.UNIMPLEMENTED), f"{method} is not supported by the gateway: use Predict"
        )
        raise AssertionError("unreachable: context.abort raises")

    return refuse


def add_tfserving_services(servicer: TFServingServicer, server: grpc.aio.Server) -> None:
    """Register TF Serving's two services on `server` with no (de)serializers: the handlers take and
    return wire bytes."""
    served = {
        PREDICTION_SERVICE: {"Predict": servicer.Predict, "GetModelMetadata": servicer.GetModelMetadata},
        MODEL_SERVICE: {"GetModelStatus": servicer.GetModelStatus},
    }
    for service, methods in served.items():
        handlers: dict[str, grpc.RpcMethodHandler] = {
            name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()
        }
        for name in _UNIMPLEMENTED[service]:
            handlers[name] = grpc.unary_unary_rpc_method_handler(_unimplemented(name))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)

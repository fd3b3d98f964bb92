"""The TorchServe front's Predictions call and error table, shared by its REST and gRPC listeners.

A Predictions body is the project's tensor payload (`gateway.codecs.torchserve.payload`): its tensors
become an `InferenceRequest` for any routed model, whatever its backend, and the answer is the response
payload; a metadata query is answered with the model's OIP metadata as a signature's JSON
(`gateway.codecs.torchserve.signature`), as the project's TorchServe handler answers it.

Errors (PROTOCOLS §3.1): TorchServe's body is `{"code", "type", "message"}`, `type` a Java exception
class name. The HTTP status is the one `ErrorCode` table's except where TorchServe answers otherwise:
RESOURCE_EXHAUSTED (the in-flight limit) is 503 `ServiceUnavailableException`, what TorchServe answers
when a model's job queue is full; BAD_GATEWAY (a backend's unreadable answer) is 503 as well, the status
TorchServe gives a prediction its worker failed (TorchServe has no 502). A status without an exception
class of its own is `InternalServerException` when it is 5xx, as TorchServe reports every failure its
workers return, and `BadRequestException` when it is 4xx (413: the body is over `max_request_bytes`, as
TorchServe answers a body over its `max_request_size`). 507, TorchServe's answer to a worker out of memory,
has no gateway cause and is never sent. The gRPC listener maps codes with the one table unchanged: it
agrees with TorchServe's own mapping of its HTTP statuses (`GRPCUtils.getGRPCStatusCode`) for every status
TorchServe sends but 502, which TorchServe never sends (BAD_GATEWAY is UNAVAILABLE, TorchServe's 503).
"""

from __future__ import annotations

import json
import logging
from typing import Final

from gateway.api.admission import refused
from gateway.codecs.torchserve import payload
from gateway.codecs.torchserve.signature import Signature
from gateway.errors import ErrorCode, GatewayError, clip
from gateway.server import InferenceServer
from gateway.types import InferenceRequest, RequestContext, RequestedOutput

log = logging.getLogger(__name__)

BAD_REQUEST: Final = "BadRequestException"
MODEL_NOT_FOUND: Final = "ModelNotFoundException"
UNAVAILABLE: Final = "ServiceUnavailableException"
INTERNAL: Final = "InternalServerException"
_ERRORS: Final[dict[ErrorCode, tuple[int, str]]] = {
    ErrorCode.INVALID_ARGUMENT: (400, BAD_REQUEST),
    ErrorCode.FAILED_PRECONDITION: (400, BAD_REQUEST),
    ErrorCode.OUT_OF_RANGE: (400, BAD_REQUEST),
    ErrorCode.NOT_FOUND: (404, MODEL_NOT_FOUND),
    ErrorCode.RESOURCE_EXHAUSTED: (503, UNAVAILABLE),
    ErrorCode.UNAVAILABLE: (503, UNAVAILABLE),
    ErrorCode.BAD_GATEWAY: (503, INTERNAL),
}


def error_status(code: ErrorCode) -> tuple[int, str]:
    """TorchServe's HTTP status and exception type for an error code (see the module's docstring)."""
    known = _ERRORS.get(code)
    if known is not None:
        return known
    return code.http_status, BAD_REQUEST if code.http_status < 500 else INTERNAL


def error_response(exc: GatewayError) -> tuple[int, bytes]:
    """The HTTP status and TorchServe error body of `exc`."""
    status, kind = error_status(exc.code)
    return status, payload.error_body(status, kind, exc.message)


def health_body(healthy: bool) -> bytes:
    """TorchServe's `/ping` body (and gRPC Ping's `health`): `{"status": "Healthy"}` or "Unhealthy"."""
    return json.dumps({"status": "Healthy" if healthy else "Unhealthy"}, indent=2).encode()


async def predictions(
    server: InferenceServer, model: str, version: str, body: bytes, context: RequestContext
) -> tuple[bytes, bool]:
    """The answer to a Predictions call of `model` at `version` ("": any) whose payload is `body`, and
    whether it is JSON (a metadata query's signature) rather than a response payload.

    An inference is counted once: a payload that does not decode by `observe_rejected`, any other call
    by the server's `infer`. A metadata query is a metadata call: not counted. The caller holds the
    in-flight admission.

    Raises:
        GatewayError: The payload is not one (INVALID_ARGUMENT), or as `InferenceServer.infer` /
            `model_metadata` raise.
    """
    try:
        tensors, outputs, metadata_query = payload.parse_request(body)
    except Exception as exc:
        raise refused(server, model, context, exc, version) from None
    if metadata_query:
        metadata = await server.model_metadata(model, version)
        signature = Signature(tuple(metadata.inputs), tuple(metadata.outputs))
        return json.dumps(signature.to_json()).encode(), True
    requested = None if outputs is None else [RequestedOutput(name) for name in outputs]
    request = InferenceRequest(model, tensors, version, outputs=requested)
    response = await server.infer(request, context)
    try:
        return payload.encode_response(response.outputs), False
    except GatewayError:
        # Only an answer the server should never give (a BYTES element neither bytes nor str) gets here:
        # not the client's error, whatever the codec calls it. `infer` has counted it as OK.
        log.exception("the answer of model '%s' cannot be written as a payload", clip(model))
        raise GatewayError("internal error", code=ErrorCode.INTERNAL) from None

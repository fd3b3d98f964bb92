"""TF Serving's REST API on the gateway's REST listener, for any routed model (PROTOCOLS §1).

`GET /v1/models/{m}[/versions/{v}|/labels/{l}]` answers GetModelStatus, `.../metadata` GetModelMetadata,
and `POST ...:predict` runs Predict in row (`instances`) or columnar (`inputs`) format; `:classify` and
`:regress` (tf.Example signatures, which OIP models do not have) answer 501. Paths are matched as TF
Serving matches them: case-insensitively, versions `\\d+`, labels `[A-Za-z0-9_]+`; any other path under
`/v1/` is TF Serving's 400 `Malformed request`. A label travels as the gateway's version string.

Every error body is TF Serving's `{"error": "..."}`. The HTTP status comes from the one `ErrorCode`
table, which agrees with TF Serving's (http_server.cc) except for one code: BAD_GATEWAY (a backend's
unreadable answer), which TF Serving has no status for, is 503 as its gRPC code UNAVAILABLE is there.
PAYLOAD_TOO_LARGE stays 413 (TF Serving sets no body limit; 429 would tell the client to retry).

Limits and metrics are the OIP listener's: the same body limit and the process's in-flight count, and
each predict call is counted once, under the protocol label `tfserving_rest` and the code it is answered
with: a call refused before inference (an undecodable body, a row request whose answer the model's
metadata shows cannot be rows, an unexpected failure) by `observe_rejected`, any other by the server's
`infer`; the answer's encoding cannot fail after it (`rest.encode_predict_response`).
"""

from __future__ import annotations

import time
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from gateway.api.admission import refused
from gateway.api.rest.body import decode_content, read_body
from gateway.api.rest.protocol_route import ProtocolRoute
from gateway.api.tfserving import model_metadata, model_status
from gateway.codecs.tfserving import paths
from gateway.codecs.tfserving import rest as codec
from gateway.codecs.tfserving.front import check_signature
from gateway.errors import ErrorCode, GatewayError, InvalidRequest, Unimplemented, clip
from gateway.types import InferenceRequest, RequestContext

PROTOCOL: Final = "tfserving_rest"
JSON: Final = "application/json"


def http_status(code: ErrorCode) -> int:
    """TF Serving's HTTP status for an error code (see the module's docstring for the one difference)."""
    return 503 if code is ErrorCode.BAD_GATEWAY else code.http_status


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


class TFServingRoute(ProtocolRoute):
    """Every path under `/v1/` (any case), dispatched by TF Serving's patterns."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and paths.PREFIX.match(scope["path"]):
            return Match.FULL, {}
        return Match.NONE, {}

    def _failure(self, error: GatewayError) -> Response:
        return _json(codec.error_body(error.message), http_status(error.code))

    async def _dispatch(self, request: Request, method: str, path: str) -> Response:
        call = paths.parse(method, path)
        if call is None or not call.model:  # (`GET /v1/models` names no model: malformed here too)
            raise InvalidRequest(f"Malformed request: {method} {clip(path)}")
        if call.verb == paths.METADATA:
            return _json(codec.proto_body(await model_metadata(self._server, call.model, call.version)))
        if call.verb == paths.STATUS:
            return _json(codec.proto_body(await model_status(self._server, call.model, call.version)))
        if call.verb != "predict":
            raise Unimplemented(f"{call.verb} is not supported by the gateway: use predict")
        return await self._predict(request, call.model, call.version)

    async def _predict(self, request: Request, model: str, version: str) -> Response:
        context = RequestContext(protocol=PROTOCOL)
        with self._limit.admit(self._server, model, context):
            try:
                wire = await read_body(request, self._max_request_bytes)
                context.received_at = time.monotonic()
                body = decode_content(wire, request.headers.get("content-encoding"), self._max_request_bytes)
                # JSON numbers carry no dtype: the model's metadata (cached by the DataPlane) types them.
                metadata = await self._server.model_metadata(model, version)
                signature, inputs, row_format = codec.decode_predict_request(body, metadata.inputs)
                check_signature(signature)
                if row_format:  # refused now, not once the model has run and been counted
                    codec.check_row_format(metadata.outputs)
            except Exception as exc:  # counted once: it never reaches `infer` (a bug is INTERNAL)
                raise refused(self._server, model, context, exc, version) from None
            response = await self._server.infer(InferenceRequest(model, inputs, version), context)
        payload = codec.encode_predict_response(response.outputs, row_format)
        self._server.observe_transfer(context, len(wire), len(payload))
        return _json(payload)

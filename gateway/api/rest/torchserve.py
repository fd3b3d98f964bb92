"""TorchServe's inference API on the gateway's REST listener, for any routed model (PROTOCOLS §3.1).

`POST` (or `PUT`) `/predictions/{model}[/{version}]` takes the project's tensor payload as its body and
answers the response payload (`application/octet-stream`), or for a metadata query the model's signature
JSON (see `gateway.api.torchserve`); `GET /ping` answers `{"status": "Healthy"}` while the gateway
serves, else TorchServe's 500 `{"status": "Unhealthy"}`. Every error body is TorchServe's
`{"code", "type", "message"}`: another path under `/predictions` is its 404 `ResourceNotFoundException`,
another method its 405 `MethodNotAllowedException`.

The body is taken as it is whatever its Content-Type: none, `application/octet-stream`, or the
`application/x-www-form-urlencoded` that `curl --data-binary` sends by default (the payload describes
itself; TorchServe also hands a body without a form Content-Type to its handler as is). A
`multipart/form-data` body (`curl -F data=@file`), which TorchServe splits into fields, is refused with
400: send the payload as the body. An `Authorization: Bearer <key>` header, which TorchServe clients
send, is accepted and ignored: the gateway does not authenticate its clients.

Limits and metrics are the OIP listener's: the same body limit (and `Content-Encoding: gzip`/`deflate`),
the process's in-flight count (taken before the body is read, so a metadata query takes a place too),
and each inference counted once under the protocol label `torchserve_rest`.
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
from gateway.api.torchserve import error_response, health_body, predictions
from gateway.codecs.torchserve import payload
from gateway.errors import GatewayError, InvalidRequest, clip
from gateway.types import RequestContext

PROTOCOL: Final = "torchserve_rest"
PREDICTIONS: Final = "/predictions"
PING: Final = "/ping"
JSON: Final = "application/json"
_PREDICT_METHODS: Final = frozenset({"POST", "PUT"})


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def _error(status: int, kind: str, message: str) -> Response:
    return _json(payload.error_body(status, kind, message), status)


def _model_and_version(path: str) -> tuple[str, str] | None:
    """`(model, version)` of `/predictions/{model}[/{version}]` ("" for no version); None otherwise."""
    parts = path[len(PREDICTIONS) + 1 :].split("/") if path.startswith(PREDICTIONS + "/") else []
    if len(parts) == 1 and parts[0]:
        return parts[0], ""
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    return None


class TorchServeRoute(ProtocolRoute):
    """`/ping`, and every path under `/predictions`, answered in TorchServe's shapes."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path = scope["path"]
            if path == PING or path == PREDICTIONS or path.startswith(PREDICTIONS + "/"):
                return Match.FULL, {}
        return Match.NONE, {}

    def _failure(self, error: GatewayError) -> Response:
        status, body = error_response(error)
        return _json(body, status)

    async def _dispatch(self, request: Request, method: str, path: str) -> Response:
        if path == PING:
            if method not in ("GET", "HEAD"):
                return _error(405, "MethodNotAllowedException", f"method {clip(method)} not allowed on /ping")
            healthy = await self._server.ready()
            return _json(health_body(healthy), 200 if healthy else 500)
        called = _model_and_version(path)
        if called is None:
            return _error(
                404,
                "ResourceNotFoundException",
                f"no such endpoint: {clip(path)} (use /predictions/{{model}}[/{{version}}])",
            )
        if method not in _PREDICT_METHODS:
            return _error(
                405, "MethodNotAllowedException", f"method {clip(method)} not allowed on {clip(path)}"
            )
        return await self._predict(request, *called)

    async def _predict(self, request: Request, model: str, version: str) -> Response:
        context = RequestContext(protocol=PROTOCOL)
        with self._limit.admit(self._server, model, context):
            try:
                content_type = request.headers.get("content-type", "")
                if content_type.lower().startswith("multipart/"):
                    raise InvalidRequest(
                        "multipart bodies are not supported: send the payload as the body "
                        "(Content-Type: application/octet-stream)"
                    )
                wire = await read_body(request, self._max_request_bytes)
                context.received_at = time.monotonic()
                body = decode_content(wire, request.headers.get("content-encoding"), self._max_request_bytes)
            except Exception as exc:
                raise refused(self._server, model, context, exc, version) from None
            answer, is_json = await predictions(self._server, model, version, body, context)
        if is_json:  # a metadata query: no inference to account for
            return _json(answer)
        self._server.observe_transfer(context, len(wire), len(answer))
        return Response(answer, media_type=payload.CONTENT_TYPE)

"""The Open Inference Protocol REST listener (FastAPI), over any `InferenceServer`.

Thin by design: read the body, decode it with the v2 REST codec, call the server, encode. Handlers take
the raw `Request` and return raw `Response`s so FastAPI does no validation or serialisation of its own on
the hot path, and every error leaves as the protocol's `{"error": "..."}` body with the status from the
one error table (never FastAPI's `{"detail": ...}` or a 422). Inference bodies may be compressed with
`Content-Encoding: gzip` or `deflate`, as Triton accepts (tritonclient's `request_compression_algorithm`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.admission import InFlightLimit, refused
from gateway.api.deadline import deadline_from
from gateway.api.rest.body import decode_content, read_body
from gateway.api.rest.tfserving import TFServingRoute
from gateway.api.rest.torchserve import TorchServeRoute
from gateway.codecs.v2 import rest as codec
from gateway.errors import ErrorCode, GatewayError, InvalidRequest, clip
from gateway.server import InferenceServer
from gateway.types import RequestContext

log = logging.getLogger(__name__)

HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"
BINARY = "application/octet-stream"
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
_MAX_HEADER_DIGITS: Final = 18  # below 2**63: a header length is checked against the body length later


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def _error(status: int, message: str) -> Response:
    return Response(codec.error_body(message), status_code=status, media_type=JSON)


def _header_length(request: Request) -> int | None:
    """The header's decimal value. Python's `int()` would also take "+108", " 108" or "1_08": refused, as
    the protocol says decimal digits and another server behind us may read them differently."""
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidRequest(
            "header Inference-Header-Content-Length must be a non-negative decimal integer, "
            f"got '{clip(raw)}'"
        )
    if len(raw) > _MAX_HEADER_DIGITS:  # int() refuses past 4300 digits; no body is this long anyway
        raise InvalidRequest(
            f"header Inference-Header-Content-Length {clip(raw, 32)} exceeds any body length"
        )
    return int(raw)


def create_app(
    server: InferenceServer,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    limit: InFlightLimit | None = None,
    tfserving: bool = False,
    torchserve: bool = False,
) -> FastAPI:
    """Build the REST app serving the OIP endpoints (plus Triton's model-config extension) for `server`.

    An inference request that `limit` refuses gets 429 before its body is read, so memory stays near the
    limit x the request size under a flood. Health and metadata calls do not count. `tfserving` adds
    TF Serving's REST API under `/v1/` (`gateway.api.rest.tfserving`), `torchserve` TorchServe's
    `/predictions` and `/ping` (`gateway.api.rest.torchserve`), with the same limits.
    """
    app = FastAPI(title="Open Inference Protocol", docs_url=None, redoc_url=None, openapi_url=None)
    in_flight = limit if limit is not None else InFlightLimit()

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> Response:
        return _error(exc.code.http_status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no such endpoint: {clip(request.method)} {clip(request.url.path)}")
        if exc.status_code == 405:
            return _error(405, f"method {clip(request.method)} not allowed on {clip(request.url.path)}")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error")

    @app.get("/v2")
    async def server_metadata() -> Response:
        return _json(codec.server_metadata_to_json(await server.server_metadata()))

    @app.get("/v2/health/live")
    async def live() -> Response:
        ok = await server.live()
        return _json({"live": ok}, 200 if ok else 503)

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = await server.ready()
        return _json({"ready": ok}, 200 if ok else 503)

    async def model_metadata(model: str, version: str = "") -> Response:
        return _json(codec.model_metadata_to_json(await server.model_metadata(model, version)))

    async def model_ready(model: str, version: str = "") -> Response:
        ok = await server.model_ready(model, version)
        return _json({"name": model, "ready": ok}, 200 if ok else 503)

    async def model_config(model: str, version: str = "") -> Response:
        return _json(codec.model_config_to_json(await server.model_config(model, version)))

    async def infer(request: Request, model: str, version: str = "") -> Response:
        try:
            return await _infer(request, model, version)
        except asyncio.CancelledError:
            # Only the listener's shutdown cancels a REST handler, once the grace period is over: answer
            # as the gRPC listener does then, not with uvicorn's plain-text 500.
            return _error(ErrorCode.UNAVAILABLE.http_status, "the server is shutting down")

    async def _infer(request: Request, model: str, version: str) -> Response:
        context = RequestContext(protocol="rest")
        with in_flight.admit(server, model, context):
            try:
                wire = await read_body(request, max_request_bytes)
                context.received_at = time.monotonic()
                body = decode_content(wire, request.headers.get("content-encoding"), max_request_bytes)
                header_length = _header_length(request)
                inference_request = codec.decode_infer_request(body, header_length, model, version)
                if header_length == 0:
                    # A raw body names no input: the model's single input is it (the codec checks that).
                    metadata = await server.model_metadata(model, version)
                    inference_request = codec.complete_raw_request(inference_request, metadata.inputs)
                context.deadline = deadline_from(inference_request.parameters)
            except Exception as exc:  # counted once: it never reaches `infer` (a bug is INTERNAL)
                raise refused(server, model, context, exc, version) from None
            response = await server.infer(inference_request, context)
        payload, json_length = codec.encode_infer_response(response, inference_request)
        server.observe_transfer(context, len(wire), len(payload))
        if json_length is None:
            return Response(payload, media_type=JSON)
        return Response(payload, media_type=BINARY, headers={HEADER_LENGTH: str(json_length)})

    def by_path(
        handler: Callable[[str, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A plain Starlette endpoint reading the path parameters itself: FastAPI's per-request dependency
        solving costs tens of microseconds (and would take `?version=` from the query string)."""

        async def endpoint(request: Request) -> Response:
            params = request.path_params
            return await handler(params["model"], params.get("version", ""))

        return endpoint

    async def infer_endpoint(request: Request) -> Response:
        params = request.path_params
        return await infer(request, params["model"], params.get("version", ""))

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.add_route(prefix, by_path(model_metadata), methods=["GET"])
        app.add_route(prefix + "/ready", by_path(model_ready), methods=["GET"])
        app.add_route(prefix + "/config", by_path(model_config), methods=["GET"])
        app.add_route(prefix + "/infer", infer_endpoint, methods=["POST"])
    if tfserving:
        app.router.routes.append(TFServingRoute(server, max_request_bytes=max_request_bytes, limit=in_flight))
    if torchserve:
        route = TorchServeRoute(server, max_request_bytes=max_request_bytes, limit=in_flight)
        app.router.routes.append(route)
    return app

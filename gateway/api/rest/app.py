"""The Open Inference Protocol REST listener (FastAPI), over any `InferenceServer`.

Thin by design: read the body, decode it with the v2 REST codec, call the server, encode. Handlers take
the raw `Request` and return raw `Response`s so FastAPI does no validation or serialisation of its own on
the hot path, and every error leaves as the protocol's `{"error": "..."}` body with the status from the
one error table (never FastAPI's `{"detail": ...}` or a 422).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.deadline import deadline_from
from gateway.codecs.v2 import rest as codec
from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge
from gateway.server import InferenceServer
from gateway.types import RequestContext

log = logging.getLogger(__name__)

HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"
BINARY = "application/octet-stream"
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def _error(status: int, message: str) -> Response:
    return Response(codec.error_body(message), status_code=status, media_type=JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` before reading more than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _header_length(request: Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(
            f"header Inference-Header-Content-Length must be an integer, got '{raw}'"
        ) from None


def create_app(server: InferenceServer, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """Build the REST app serving the OIP endpoints (plus Triton's model-config extension) for `server`."""
    app = FastAPI(title="Open Inference Protocol", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> Response:
        return _error(exc.code.http_status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no such endpoint: {request.method} {request.url.path}")
        if exc.status_code == 405:
            return _error(405, f"method {request.method} not allowed on {request.url.path}")
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
        body = await _read_body(request, max_request_bytes)
        header_length = _header_length(request)
        inference_request = codec.decode_infer_request(body, header_length, model, version)
        if header_length == 0:
            # A raw body names no input: the model's single input is the one (the codec checks it has one).
            metadata = await server.model_metadata(model, version)
            inference_request = codec.complete_raw_request(inference_request, metadata.inputs)
        context = RequestContext(
            protocol="rest",
            deadline=deadline_from(inference_request.parameters),
            request_bytes=len(body),
        )
        response = await server.infer(inference_request, context)
        payload, json_length = codec.encode_infer_response(response, inference_request)
        server.observe_transfer(context, len(body), len(payload))
        if json_length is None:
            return Response(payload, media_type=JSON)
        return Response(payload, media_type=BINARY, headers={HEADER_LENGTH: str(json_length)})

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.add_api_route(prefix, model_metadata, methods=["GET"])
        app.add_api_route(prefix + "/ready", model_ready, methods=["GET"])
        app.add_api_route(prefix + "/config", model_config, methods=["GET"])
        app.add_api_route(prefix + "/infer", infer, methods=["POST"])
    return app

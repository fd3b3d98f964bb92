"""REST listener: TF Serving's `/v1/models/...` API as a plain ASGI app (PROTOCOLS.md §1).

A plain ASGI callable rather than a framework: TF Serving routes by two case-insensitive regexes, not
by path templates, and every answer is a ready JSON body, so a router and response models would only
add per-request cost. Run it with uvicorn (`lifespan="off"`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from starlette.requests import Request

from gateway.api.rest.body import read_body
from gateway.codecs.tfserving import paths, rest
from gateway.codecs.tfserving.signature import SIGNATURE_DEF_FIELD
from gateway.errors import ErrorCode, GatewayError, InvalidRequest, clip
from runtimes.common.versions import MAX_VERSION_DIGITS
from runtimes.tfserving import rest_json
from runtimes.tfserving.grpc_api import status_response, unimplemented
from runtimes.tfserving.service import (
    Target,
    TFServingCore,
    error_code_name,
    gateway_error,
    metadata_json,
    to_json,
)

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# TF Serving's own routing expressions, one definition with the gateway's front (groups: model, number,
# label, then the verb for POST and "/metadata" for GET).
_POST: Final = paths.POST
_GET: Final = paths.GET
_JSON_HEADERS: Final = [(b"content-type", b"application/json")]
_API: Final = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


class RestApp:
    """The ASGI app. `metrics_path`: where Prometheus scrapes (None: not served, as without a
    monitoring config); `timeout_s`: `--rest_api_timeout_in_ms`, the deadline of a queued request.
    Request bodies over the core's `max_request_bytes` are refused with 413 before more is read."""

    def __init__(self, core: TFServingCore, *, metrics_path: str | None, timeout_s: float) -> None:
        self._core = core
        self._metrics_path = metrics_path
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        if path == self._metrics_path and method == "GET":
            body = self._core.metrics.exposition()
            await _send(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")])
            return
        start = time.perf_counter()
        model, api, code = "", "", "OK"
        try:
            if not path.lower().startswith("/v1/"):
                raise GatewayError(f"Not found: {clip(path)}", code=ErrorCode.NOT_FOUND)
            if method == "POST" and (match := _POST.fullmatch(path)):
                model, api = match.group(1), _API[match.group(4).lower()]
                request = await read_body(Request(scope, receive), self._core.max_request_bytes)
                status, body = 200, await self._post(match, api, request)
            elif method == "GET" and (match := _GET.fullmatch(path)):
                model = match.group(1) or ""
                api = "GetModelMetadata" if match.group(4) else "GetModelStatus"
                status, body = 200, self._get(match)
            else:
                raise InvalidRequest(f"Malformed request: {method} {clip(path)}")
        except asyncio.CancelledError:
            if model:
                self._record(model, api, "CANCELLED", start)
            raise
        except Exception as exc:
            error = gateway_error(exc)
            if error is not exc:
                _log.error("request %s %s failed", method, clip(path), exc_info=exc)
            status, body, code = (
                error.code.http_status,
                rest.error_body(error.message),
                error_code_name(error.code),
            )
        if model:
            self._record(model, api, code, start)
        await _send(send, status, body, _JSON_HEADERS)

    def _record(self, model: str, api: str, code: str, start: float) -> None:
        label = self._core.model_label(model)
        self._core.metrics.request(label, api, "REST", code, time.perf_counter() - start)

    async def _post(self, match: re.Match[str], api: str, body: bytes) -> bytes:
        target = _target(match)
        if api != "Predict":
            raise unimplemented(api)
        target = Target(target.model, target.version, target.label, rest_json.signature_name(body))
        version, signature = self._core.signature(target)  # its inputs type the JSON
        _, inputs, row_format = rest.decode_predict_request(body, signature.rest_inputs)
        prediction = await self._core.run(
            version, signature, rest_json.to_arrays(inputs), deadline=time.monotonic() + self._timeout_s
        )
        return rest_json.encode_outputs(prediction.signature.outputs, prediction.outputs, row_format)

    def _get(self, match: re.Match[str]) -> bytes:
        if not match.group(1):
            raise InvalidRequest("Missing model name in request.")
        target = _target(match)
        if match.group(4):
            version = self._core.metadata(target, [SIGNATURE_DEF_FIELD])
            return rest_json.dumps(metadata_json(version))
        return rest_json.dumps(to_json(status_response(self._core, target)))


def _target(match: re.Match[str]) -> Target:
    version = match.group(2)
    if version is not None and len(version) > MAX_VERSION_DIGITS:
        raise InvalidRequest(f"Malformed request: version {clip(version)} is out of range")
    return Target(match.group(1), int(version) if version is not None else None, match.group(3) or "")


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

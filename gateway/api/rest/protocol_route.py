"""`ProtocolRoute`: the REST listener's route for another server's API (TF Serving's `/v1/...`,
TorchServe's `/predictions` and `/ping`), answered whole in that API's own shapes.

A route of its own rather than Starlette path routes: a path of that API that matches none of its calls
must still get that API's error, not the OIP listener's 404, and TF Serving's paths match in any case.
A subclass says which paths are its (`matches`), answers them (`_dispatch`) and renders a failure in its
protocol's error body (`_failure`); the one place failures are caught is here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, NoMatchFound
from starlette.types import Receive, Scope, Send

from gateway.api.admission import InFlightLimit
from gateway.errors import ErrorCode, GatewayError
from gateway.server import InferenceServer

log = logging.getLogger(__name__)


class ProtocolRoute(BaseRoute):
    def __init__(self, server: InferenceServer, *, max_request_bytes: int, limit: InFlightLimit) -> None:
        self._server = server
        self._max_request_bytes = max_request_bytes
        self._limit = limit

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._answer(Request(scope, receive))
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        method, path = request.method, request.url.path
        try:
            return await self._dispatch(request, method, path)
        except GatewayError as exc:
            return self._failure(exc)
        except asyncio.CancelledError:
            # Only the listener's shutdown cancels a handler (see the OIP listener).
            return self._failure(GatewayError("the server is shutting down", code=ErrorCode.UNAVAILABLE))
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            return self._failure(GatewayError("internal error", code=ErrorCode.INTERNAL))

    async def _dispatch(self, request: Request, method: str, path: str) -> Response:
        """The answer to one call of this API. Raises `GatewayError` for a failure to answer in its shape."""
        raise NotImplementedError

    def _failure(self, error: GatewayError) -> Response:
        """`error` in this API's error body and status."""
        raise NotImplementedError

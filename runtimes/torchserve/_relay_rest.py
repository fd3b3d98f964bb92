"""The key relay's REST side: a plain ASGI app (served by uvicorn) forwarding TorchServe's inference API.

A request body is read whole, up to `max_request_bytes` (TorchServe's `max_request_size` caps it
anyway), with the gateway's own `read_body` (a starlette `Request` over this app's ASGI scope), so a
call TorchServe refuses for the pod's key can be sent again; the answer is streamed back as it comes.
Connections to TorchServe on loopback are pooled (one httpx client). Errors are in TorchServe's shape
(`payload.error_body`), and a refused pod key is told apart with `payload.is_key_refusal`, as the
gateway's TorchServe backend does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import httpx
from starlette.requests import Request

from gateway.api.rest.body import read_body
from gateway.codecs.torchserve.payload import error_body, is_key_refusal
from gateway.errors import GatewayError, PayloadTooLarge
from runtimes.torchserve.podkey import PodKey
from runtimes.torchserve.relay import KEY_REFUSED, CallerKey

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Not forwarded either way: hop-by-hop headers (RFC 9110 7.6.1), and those the relay sets itself.
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED: Final = _HOP_BY_HOP | {"host", "authorization", "content-length"}


def forwarded_headers(headers: list[tuple[bytes, bytes]], pod_header: str) -> list[tuple[bytes, bytes]]:
    """The caller's headers as sent on to TorchServe: its key replaced with the pod's, hop-by-hop ones
    dropped (and those named by `Connection`)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.decode("latin-1").split(",")
    }
    kept = [
        (name, value)
        for name, value in headers
        if (lowered := name.decode("latin-1").lower()) not in _NOT_FORWARDED and lowered not in named
    ]
    return [*kept, (b"authorization", pod_header.encode())]


def _is_forwarded(method: str, path: str) -> bool:
    if path == "/ping":
        return method == "GET"
    return method in ("POST", "PUT") and path.startswith("/predictions/") and len(path) > len("/predictions/")


async def _respond(send: Send, status: int, data: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _status(send: Send, status: int, text: str) -> None:
    """The relay's own health answers: `{"status": text}`."""
    await _respond(send, status, json.dumps({"status": text}).encode())


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    """An error in TorchServe's shape, so clients of TorchServe read it as theirs."""
    await _respond(send, status, error_body(status, kind, message))


class RestRelay:
    """The ASGI app: `/relay/ready`, `/relay/live`, and TorchServe's `/predictions` and `/ping`.

    Args:
        caller: The key callers must bear.
        pod: The pod's own TorchServe key.
        upstream: TorchServe's inference address on loopback (`http://127.0.0.1:8080`).
        client: The pooled client to TorchServe.
        max_request_bytes: The largest request body forwarded (413 above).
    """

    def __init__(
        self,
        caller: CallerKey,
        pod: PodKey,
        upstream: str,
        client: httpx.AsyncClient,
        *,
        max_request_bytes: int,
    ) -> None:
        self._caller = caller
        self._pod = pod
        self._upstream = upstream.rstrip("/")
        self._client = client
        self._max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path.startswith("/relay/") and method == "GET":
            if path == "/relay/live":
                await _status(send, 200, "Alive")
                return
            if path == "/relay/ready":
                healthy = await self.upstream_healthy()
                await _status(send, 200 if healthy else 503, "Healthy" if healthy else "Unhealthy")
                return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        authorization = next((v.decode("latin-1") for k, v in headers if k.lower() == b"authorization"), None)
        if not self._caller.admits(authorization):
            await _error(send, 400, "InvalidKeyException", KEY_REFUSED)
            return
        if not _is_forwarded(method, path):
            await _error(
                send,
                404,
                "ResourceNotFoundException",
                "Requested resource is not found: the relay forwards "
                "POST/PUT /predictions/... and GET /ping only.",
            )
            return
        try:
            body = await read_body(Request(scope, receive), self._max_request_bytes)
        except PayloadTooLarge as exc:
            await _error(send, 413, "RequestEntityTooLarge", exc.message)
            return
        except GatewayError:  # the caller went away while sending: nobody is left to answer
            return
        target = self._upstream + scope.get("raw_path", path.encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        await self._forward(method, target, headers, body, send)

    async def _send_upstream(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx.Response | None:
        """TorchServe's answer (streaming), after one recovery if it refused the pod's key; None when the
        pod's key cannot be fixed."""
        async for pod_header in self._pod.attempts():
            request = self._client.build_request(
                method, url, headers=forwarded_headers(headers, pod_header), content=body
            )
            reply = await self._client.send(request, stream=True)
            if reply.status_code not in (400, 401, 403):
                return reply
            await reply.aread()
            if not is_key_refusal(reply.status_code, reply.content):
                return reply
            await reply.aclose()
        return None

    async def _forward(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes, send: Send
    ) -> None:
        if not self._pod.header():
            await _error(send, 503, "ServiceUnavailableException", "TorchServe has not written its keys yet")
            return
        try:
            reply = await self._send_upstream(method, url, headers, body)
        except httpx.HTTPError as exc:
            log.warning("TorchServe on loopback did not answer: %s", type(exc).__name__)
            await _error(send, 503, "ServiceUnavailableException", "TorchServe is not reachable")
            return
        if reply is None:
            await _error(
                send, 503, "ServiceUnavailableException", "TorchServe refused the pod's inference key"
            )
            return
        try:
            await self._relay_reply(reply, send)
        except httpx.HTTPError as exc:  # the answer broke off after it started: nothing left to tell
            log.warning("TorchServe's answer broke off: %s", type(exc).__name__)
        finally:
            await reply.aclose()

    @staticmethod
    async def _relay_reply(reply: httpx.Response, send: Send) -> None:
        """TorchServe's answer as it comes (raw bytes, its own encoding); one already read (a 400 looked
        at for a key refusal) as its decoded body."""
        skip = _HOP_BY_HOP
        if reply.is_stream_consumed:
            skip = _HOP_BY_HOP | {"content-encoding", "content-length"}
        headers = [
            (name, value) for name, value in reply.headers.raw if name.decode("latin-1").lower() not in skip
        ]
        if reply.is_stream_consumed:
            headers.append((b"content-length", str(len(reply.content)).encode()))
            await send({"type": "http.response.start", "status": reply.status_code, "headers": headers})
            await send({"type": "http.response.body", "body": reply.content})
            return
        await send({"type": "http.response.start", "status": reply.status_code, "headers": headers})
        async for chunk in reply.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def upstream_healthy(self) -> bool:
        """Whether TorchServe's `/ping`, with the pod's key, says Healthy."""
        if not self._pod.header():
            return False
        try:
            reply = await self._send_upstream("GET", self._upstream + "/ping", [], b"")
        except httpx.HTTPError:
            return False
        if reply is None:
            return False
        try:
            await reply.aread()
        finally:
            await reply.aclose()
        return reply.status_code == 200

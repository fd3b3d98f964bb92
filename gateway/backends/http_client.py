"""What every REST backend kind shares: one pooled HTTP client, and the mapping of its failures (transport
errors and error statuses) to `GatewayError`s at this one boundary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

import httpx
import orjson

from gateway.backends.grpc_client import refusal
from gateway.errors import BackendError, BackendUnavailable, DeadlineExceeded, ErrorCode, GatewayError

log = logging.getLogger(__name__)

# One connection pool, shared by all endpoints: enough kept-alive connections that a busy gateway does
# not close and reopen them, bounded so a stalled backend cannot exhaust file descriptors.
_MAX_CONNECTIONS: Final = 512
_KEEPALIVE_EXPIRY_S: Final = 60.0

# HTTP statuses that are the client's business in the OIP and TF Serving APIs: passed on with the
# upstream's own message when it sent one.
PASS_THROUGH: Final[Mapping[int, ErrorCode]] = {
    400: ErrorCode.INVALID_ARGUMENT,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.ALREADY_EXISTS,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RESOURCE_EXHAUSTED,
    501: ErrorCode.UNIMPLEMENTED,
}


def pooled_client(timeout_s: float, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The HTTP client of one backend: persistent connections, no proxy from the environment."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=_MAX_CONNECTIONS,
            keepalive_expiry=_KEEPALIVE_EXPIRY_S,
        ),
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,  # backend traffic stays direct, whatever HTTP_PROXY says
        transport=transport,
    )


@contextlib.contextmanager
def map_http_errors(backend: str) -> Iterator[None]:
    """Raise httpx's failures inside the block as `GatewayError`s naming `backend`."""
    try:
        yield
    except httpx.ConnectTimeout:
        raise BackendUnavailable(f"backend '{backend}' unavailable") from None
    except httpx.TimeoutException:
        raise DeadlineExceeded(f"backend '{backend}' did not answer within the deadline") from None
    except httpx.TransportError as exc:
        log.debug("backend '%s' unavailable: %r", backend, exc)
        raise BackendUnavailable(f"backend '{backend}' unavailable") from None
    except httpx.HTTPError as exc:
        log.warning("backend '%s' failed: %r", backend, exc)
        raise BackendError(f"backend '{backend}' failed") from None


def status_error(
    backend: str, reply: httpx.Response, message_of: Callable[[httpx.Response], str | None]
) -> GatewayError:
    """The `GatewayError` an error status from `backend` is; `message_of` reads the protocol's error body
    (None when the body is not one)."""
    status = reply.status_code
    if status == 503:
        return BackendUnavailable(f"backend '{backend}' unavailable")
    if status == 504:
        return DeadlineExceeded(f"backend '{backend}' did not answer within the deadline")
    mapped = PASS_THROUGH.get(status)
    message = message_of(reply)
    if mapped is not None and message is not None:
        return refusal(mapped, message)
    log.warning("backend '%s' answered HTTP %d: %r", backend, status, reply.content[:200])
    return BackendError(f"backend '{backend}' answered HTTP {status}")


async def send(
    client: httpx.AsyncClient, backend: str, method: str, url: str, timeout_s: float, **kwargs: Any
) -> httpx.Response:
    """One request to `backend`, its failures mapped (`map_http_errors`). `timeout_s` bounds the whole
    exchange: httpx's own timeout bounds each read and write, so a backend trickling its answer would
    otherwise outlive any deadline."""
    try:
        async with asyncio.timeout(timeout_s):
            with map_http_errors(backend):
                return await client.request(method, url, timeout=timeout_s, **kwargs)
    except TimeoutError:
        raise DeadlineExceeded(f"backend '{backend}' did not answer within the deadline") from None


def json_object(
    backend: str, reply: httpx.Response, message_of: Callable[[httpx.Response], str | None]
) -> dict[str, Any]:
    """A 200 answer's JSON object; an error status as `status_error`, anything but an object as a
    `BackendError`."""
    if reply.status_code != 200:
        raise status_error(backend, reply, message_of)
    try:
        doc = orjson.loads(reply.content)
    except orjson.JSONDecodeError:
        raise BackendError(f"backend '{backend}' answered with invalid JSON") from None
    if not isinstance(doc, dict):
        raise BackendError(f"backend '{backend}' answered with a JSON {type(doc).__name__}, not an object")
    return doc

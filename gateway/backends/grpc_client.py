"""What every gRPC backend kind shares: how a channel to a model server is opened, and how a failed call's
status becomes a `GatewayError` (in the manner of httpx's `map_exceptions`, at this one boundary).

An unreachable endpoint is `BackendUnavailable` and a timeout `DeadlineExceeded`, both naming the backend
and nothing of the transport's internals; a protocol-level refusal (INVALID_ARGUMENT, NOT_FOUND, ...)
keeps its code and the upstream's message, which the protocols write for clients; an upstream INTERNAL
error or anything unreadable is `BackendError`, its details logged only.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import grpc

from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    PayloadTooLarge,
    Unimplemented,
)

log = logging.getLogger(__name__)

# Keepalive pings only while calls are active: servers with gRPC's default policy punish pings on an
# idle connection (GOAWAY "too_many_pings"). A minute is well above their 10 s to 5 min minimums.
_KEEPALIVE_TIME_MS: Final = 60_000
_KEEPALIVE_TIMEOUT_MS: Final = 20_000
_MAX_METADATA_BYTES: Final = 256 * 1024

# Upstream codes that are the client's business: passed on with the upstream's own message.
_PASS_THROUGH: Final[dict[grpc.StatusCode, ErrorCode]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE: ErrorCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS: ErrorCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED: ErrorCode.UNIMPLEMENTED,
}


def open_channel(endpoint: str, max_message_bytes: int) -> grpc.aio.Channel:
    """A persistent channel to `endpoint`, already connecting (create it inside the running loop)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        # An endpoint may be a DNS name with several addresses (a Kubernetes headless Service):
        # spread calls over all of them rather than gRPC's default of the first that connects.
        ("grpc.lb_policy_name", "round_robin"),
        # gRPC's default 8 KiB soft limit on received metadata would turn a backend's long error
        # details into RESOURCE_EXHAUSTED; take them, the gateway clips what it passes on.
        ("grpc.max_metadata_size", _MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", _MAX_METADATA_BYTES),
    ]
    channel = grpc.aio.insecure_channel(endpoint, options=options)
    channel.get_state(try_to_connect=True)  # start connecting now, not on the first request
    return channel


def refusal(code: ErrorCode, message: str) -> GatewayError:
    """An upstream's refusal under its own code; `Unimplemented` keeps its class (the DataPlane treats
    "no metadata here" specially)."""
    return Unimplemented(message) if code is ErrorCode.UNIMPLEMENTED else GatewayError(message, code=code)


def grpc_error(backend: str, exc: grpc.aio.AioRpcError) -> GatewayError:
    """The `GatewayError` a failed call to `backend` is, by the rules of this module."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        log.debug("backend '%s' unavailable: %s", backend, details)
        return BackendUnavailable(f"backend '{backend}' unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"backend '{backend}' did not answer within the deadline")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size exceeds" in details:
        # Our channel refused the backend's status details as too large: the backend's fault, and
        # not load to shed (passed on as RESOURCE_EXHAUSTED it would read "overloaded", and be retried).
        log.warning("backend '%s': %s", backend, details[:300])
        return BackendError(f"backend '{backend}' answered with status details over the metadata limit")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in details:
        # gRPC's own message size limit, not a quota to retry against: our channel refusing the
        # answer is the backend's fault; anything else refused the client's request as too large.
        log.warning("backend '%s': %s", backend, details)
        if details.startswith("CLIENT: Received"):
            return BackendError(f"backend '{backend}' answered with a message over max_message_bytes")
        return PayloadTooLarge(f"request too large for backend '{backend}'")
    mapped = _PASS_THROUGH.get(code)
    if mapped is not None:
        return refusal(mapped, details or f"backend '{backend}' refused the request ({code.name})")
    log.warning("backend '%s' failed with %s: %s", backend, code.name, details)
    return BackendError(f"backend '{backend}' failed ({code.name})")


class map_grpc_errors:  # lower case: it reads as a function, `with map_grpc_errors(name):`
    """Raise a failed call's status inside the block as the `GatewayError` it is.

    A class rather than `contextlib.contextmanager`: every backend call runs in one, and a generator per
    call costs several times as much.
    """

    __slots__ = ("_backend",)

    def __init__(self, backend: str) -> None:
        self._backend = backend

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            raise grpc_error(self._backend, exc) from None

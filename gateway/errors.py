"""One error model for the whole gateway, mapped to HTTP and gRPC by one table.

Core code raises a `GatewayError` subclass; each listener turns it into its transport's status with
`ErrorCode.http_status` / `ErrorCode.grpc_code` (the gRPC code is the `google.rpc.Code` of the same name),
so REST and gRPC cannot drift apart. Messages are written for clients: they name the model, input or
backend at fault and never carry a traceback or another library's internals.
"""

from __future__ import annotations

import enum
from typing import Final

CLIP_CHARS: Final = 256
"""The longest client-supplied string (a name, a header value) an error message quotes whole."""
MAX_MESSAGE_CHARS: Final = 4096
"""The longest message any error carries: a backstop for strings that reach a message unclipped (an
upstream's message passed on, say). The gRPC listener bounds status details further, by their encoded
size (`gateway.api.grpc.servicer.grpc_details`)."""


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """`text` as an error message may quote it: whole up to `limit` characters, else its start, an
    ellipsis and its length (a 100 KB name echoed back would make the error as large as the request)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class ErrorCode(enum.Enum):
    """A `google.rpc.Code` name with its HTTP status; the value is (HTTP status, gRPC code number)."""

    INVALID_ARGUMENT = (400, 3)
    FAILED_PRECONDITION = (400, 9)
    OUT_OF_RANGE = (400, 11)
    UNAUTHENTICATED = (401, 16)
    PERMISSION_DENIED = (403, 7)
    NOT_FOUND = (404, 5)
    ALREADY_EXISTS = (409, 6)
    RESOURCE_EXHAUSTED = (429, 8)
    CANCELLED = (499, 1)
    INTERNAL = (500, 13)
    UNKNOWN = (500, 2)
    UNIMPLEMENTED = (501, 12)
    BAD_GATEWAY = (502, 14)  # an upstream answered nonsense; gRPC has no such code, so UNAVAILABLE
    UNAVAILABLE = (503, 14)
    DEADLINE_EXCEEDED = (504, 4)
    PAYLOAD_TOO_LARGE = (413, 8)  # HTTP 413 / gRPC RESOURCE_EXHAUSTED

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_code(self) -> int:
        """The numeric `google.rpc.Code` (use `grpc.StatusCode` entries whose value[0] matches)."""
        return self.value[1]


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = clip(message, MAX_MESSAGE_CHARS - 32)  # 32: room for clip's "... (N characters)"
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(GatewayError):
    """Malformed request or tensor: the client must change what it sends."""

    code = ErrorCode.INVALID_ARGUMENT


class ModelNotFound(GatewayError):
    code = ErrorCode.NOT_FOUND

    def __init__(self, model: str, version: str = "") -> None:
        what = f"model '{clip(model)}'" + (f" version '{clip(version)}'" if version else "")
        super().__init__(f"{what} not found")


class ModelNotReady(GatewayError):
    code = ErrorCode.UNAVAILABLE


class PayloadTooLarge(GatewayError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class Overloaded(GatewayError):
    """A server refused work it has no room for (in-flight limit, full queue); it ran nothing."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class BackendUnavailable(GatewayError):
    """No replica of a backend could be reached."""

    code = ErrorCode.UNAVAILABLE


class BackendError(GatewayError):
    """A backend answered with an error or a response we cannot read."""

    code = ErrorCode.BAD_GATEWAY


class DeadlineExceeded(GatewayError):
    code = ErrorCode.DEADLINE_EXCEEDED


class Unimplemented(GatewayError):
    code = ErrorCode.UNIMPLEMENTED


class ConfigError(Exception):
    """The configuration file is invalid; the message names the file and the key."""

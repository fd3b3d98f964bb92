"""How many inference requests a process serves at once: one count shared by its REST and gRPC listeners;
and how every listener counts a request it refuses before inference (`refused`)."""

from __future__ import annotations

import logging

from gateway.errors import ErrorCode, GatewayError, Overloaded, clip
from gateway.server import InferenceServer
from gateway.types import RequestContext

log = logging.getLogger(__name__)


def refused(
    server: InferenceServer, model: str, context: RequestContext, exc: Exception, version: str = ""
) -> GatewayError:
    """Count a call refused before inference once, and return the error to raise: `exc` itself when it
    is a `GatewayError`, else (a bug) an opaque INTERNAL error, logged with its traceback."""
    if isinstance(exc, GatewayError):
        error = exc
    else:
        log.exception("a request for model '%s' failed before inference", clip(model), exc_info=exc)
        error = GatewayError("internal error", code=ErrorCode.INTERNAL)
    server.observe_rejected(model, context, error, version)
    return error


class InFlightLimit:
    """Admits inference requests while fewer than `limit` are being served (0: no limit).

    One instance per process, handed to every listener, so the limit is the process's whatever the mix of
    REST calls, gRPC calls and stream messages. Health and metadata calls do not pass through it: a busy
    server must still answer its probes.
    """

    def __init__(self, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError("the in-flight limit must be 0 (none) or more")
        self.limit = limit
        self.in_flight = 0
        self._place = _Place(self)

    def admit(self, server: InferenceServer, model: str, context: RequestContext) -> _Place:
        """Takes one place, held for the `with` block the result is used in; a refusal is counted as
        rejected, then raised. (A class rather than `contextlib.contextmanager`: a generator per request
        costs three times as much, and this is on every inference's path.)

        Raises:
            Overloaded: `limit` requests are already in flight.
        """
        if self.limit and self.in_flight >= self.limit:
            refusal = Overloaded(
                f"the server is busy: {self.in_flight} inference requests in flight "
                f"(max_in_flight {self.limit}); retry later"
            )
            server.observe_rejected(model, context, refusal)
            raise refusal
        self.in_flight += 1
        return self._place


class _Place:
    """The place `InFlightLimit.admit` took: given back when the `with` block ends, however it ends."""

    __slots__ = ("_limit",)

    def __init__(self, limit: InFlightLimit) -> None:
        self._limit = limit

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._limit.in_flight -= 1

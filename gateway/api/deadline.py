"""The client's deadline, as both listeners read it.

OIP has no deadline field; Triton's clients send the reserved request parameter `timeout` (microseconds),
and gRPC clients also set a call deadline. The earlier of the two wins.
"""

from __future__ import annotations

import time

from gateway.errors import InvalidRequest
from gateway.types import Parameters


def deadline_from(parameters: Parameters, grpc_time_remaining: float | None = None) -> float | None:
    """Absolute `time.monotonic()` deadline, or None when the client set none."""
    now = time.monotonic()
    deadline = None if grpc_time_remaining is None else now + grpc_time_remaining
    timeout_us = parameters.get("timeout")
    if timeout_us is not None:
        if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
            raise InvalidRequest("request parameter 'timeout' must be a non-negative integer (microseconds)")
        if timeout_us > 0:
            by_parameter = now + timeout_us / 1e6
            deadline = by_parameter if deadline is None else min(deadline, by_parameter)
    return deadline

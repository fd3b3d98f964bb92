"""`RequestContext.cancelled_code`: how a cancelled call is counted."""

from __future__ import annotations

import pytest

from gateway.errors import ErrorCode
from gateway.types import RequestContext


@pytest.mark.parametrize(
    ("deadline", "now", "code"),
    [
        (None, 50.0, ErrorCode.CANCELLED),  # no deadline: the client went away
        (100.0, 50.0, ErrorCode.CANCELLED),  # cancelled long before its deadline
        (100.0, 100.0, ErrorCode.DEADLINE_EXCEEDED),
        (100.0, 101.0, ErrorCode.DEADLINE_EXCEEDED),
        (100.0, 99.998, ErrorCode.DEADLINE_EXCEEDED),  # gRPC's timer a hair ahead of ours
        (100.0, 99.9, ErrorCode.CANCELLED),
    ],
)
def test_cancelled_code(deadline: float | None, now: float, code: ErrorCode) -> None:
    assert RequestContext("grpc", deadline=deadline).cancelled_code(now) is code

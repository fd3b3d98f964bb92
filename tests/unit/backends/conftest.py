"""Fixtures: a running fake OIP gRPC server, and an address where nothing listens."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from tests.unit.backends.fake_server import FakeModelServicer, start_fake_server


@pytest.fixture
async def fake_server() -> AsyncIterator[tuple[FakeModelServicer, str]]:
    servicer = FakeModelServicer()
    server, address = await start_fake_server(servicer)
    try:
        yield servicer, address
    finally:
        await server.stop(None)


@pytest.fixture
def dead_address() -> str:
    """127.0.0.1 and a port that was free a moment ago (nothing listens on it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"

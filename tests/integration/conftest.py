"""Fixtures that start the real processes: the JAX runtime and the gateway, on ephemeral ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.local_stack import LocalStack, StackPorts


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Example models exported once, the JAX runtime and the gateway started for the whole session."""
    workdir: Path = tmp_path_factory.mktemp("stack")
    with LocalStack(workdir=workdir, ports=StackPorts.ephemeral(), echo=False) as running:
        yield running


@pytest.fixture(scope="session")
def gateway_http(stack: LocalStack) -> str:
    return f"{stack.ports.host}:{stack.ports.gateway_rest}"


@pytest.fixture(scope="session")
def gateway_grpc(stack: LocalStack) -> str:
    return f"{stack.ports.host}:{stack.ports.gateway_grpc}"


@pytest.fixture(scope="session")
def runtime_http(stack: LocalStack) -> str:
    return f"{stack.ports.host}:{stack.ports.runtime_http}"


@pytest.fixture(scope="session")
def runtime_grpc(stack: LocalStack) -> str:
    return f"{stack.ports.host}:{stack.ports.runtime_grpc}"

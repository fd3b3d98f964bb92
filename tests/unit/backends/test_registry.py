"""build_backend: the factory keyed on the settings' kind."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from gateway.backends import build_backend
from gateway.backends.v2 import V2Backend
from gateway.errors import ConfigError
from gateway.settings import V2BackendSettings


async def test_v2_kind_builds_v2_backend() -> None:
    """kind v2 builds a V2Backend named after the configured backend."""
    backend = build_backend("jax", V2BackendSettings(kind="v2", endpoints=["127.0.0.1:1"]))
    try:
        assert isinstance(backend, V2Backend)
        assert backend.name == "jax"
    finally:
        await backend.close()


def test_unknown_kind_is_a_config_error() -> None:
    """A kind without an implementation is a ConfigError naming the backend's key."""
    fake: Any = SimpleNamespace(kind="onnxruntime")
    with pytest.raises(ConfigError, match=r"backends\.ts\.kind"):
        build_backend("ts", fake)

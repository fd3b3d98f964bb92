"""Backends: the only code that opens connections to model servers, one module per server kind.

`build_backend` picks the implementation by the settings' `kind`. A new kind (TF Serving, TorchServe)
adds its settings class to `gateway.settings.BackendSettings` and one entry to `_FACTORIES`; nothing
in the listeners or the core changes. Implementations are imported lazily, so a kind's client libraries
load only when a backend of that kind is configured.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.backends.base import Backend
from gateway.errors import ConfigError
from gateway.settings import (
    BackendSettings,
    TFServingBackendSettings,
    TorchServeBackendSettings,
    V2BackendSettings,
)

__all__ = ["Backend", "build_backend"]


def _v2(name: str, settings: BackendSettings) -> Backend:
    from gateway.backends.v2 import V2Backend

    assert isinstance(settings, V2BackendSettings)
    return V2Backend(name, settings)


def _tfserving(name: str, settings: BackendSettings) -> Backend:
    from gateway.backends.tfserving import TFServingBackend

    assert isinstance(settings, TFServingBackendSettings)
    return TFServingBackend(name, settings)


def _torchserve(name: str, settings: BackendSettings) -> Backend:
    from gateway.backends.torchserve import TorchServeBackend

    assert isinstance(settings, TorchServeBackendSettings)
    return TorchServeBackend(name, settings)


_FACTORIES: dict[str, Callable[[str, BackendSettings], Backend]] = {
    "v2": _v2,
    "tfserving": _tfserving,
    "torchserve": _torchserve,
}


def build_backend(name: str, settings: BackendSettings) -> Backend:
    """Create the backend described by `settings`.

    Call it inside the running event loop: backends open their (lazy) connections on creation.

    Args:
        name: The backend's configured name, used in error messages and metric labels.
        settings: Its validated settings; `settings.kind` selects the implementation.

    Raises:
        ConfigError: No implementation is registered for the kind.
    """
    factory = _FACTORIES.get(settings.kind)
    if factory is None:
        raise ConfigError(f"backends.{name}.kind: no backend implementation for kind '{settings.kind}'")
    return factory(name, settings)

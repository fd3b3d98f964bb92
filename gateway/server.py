"""The interface every Open Inference Protocol listener serves.

The gateway's `DataPlane` implements it by routing to backends; the JAX runtime implements it over its
local models. The REST and gRPC listeners in `gateway.api` take any `InferenceServer`, so both processes
speak the protocol through the same, once-tested code.
"""

from __future__ import annotations

from typing import Protocol

from gateway.errors import GatewayError
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    RequestContext,
    ServerMetadata,
)


class InferenceServer(Protocol):
    async def live(self) -> bool: ...

    async def ready(self) -> bool: ...

    async def server_metadata(self) -> ServerMetadata: ...

    async def model_ready(self, name: str, version: str = "") -> bool:
        """False for a known model that is not ready; raises `ModelNotFound` for an unknown one."""
        ...

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata: ...

    async def model_config(self, name: str, version: str = "") -> ModelConfig: ...

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse: ...

    def observe_transfer(self, context: RequestContext, bytes_in: int, bytes_out: int) -> None:
        """Called by a listener once per infer call with the wire sizes, after the response is encoded."""
        ...

    def observe_rejected(
        self, model: str, context: RequestContext, error: GatewayError, version: str = ""
    ) -> None:
        """Called by a listener for an infer call refused before `infer` (undecodable, over a limit).

        `model` and `version` are what the client asked for ("" when unknown): implementations must bound
        them before using them as metric labels. The version picks the route (and so the backend and
        framework labels) as `infer` would.
        """
        ...

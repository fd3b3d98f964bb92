"""A fake `InferenceServer` for the listeners' tests: one model whose answer size and delay are fields."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from gateway.errors import GatewayError
from gateway.types import (
    InferenceRequest,
    InferenceResponse,
    ModelConfig,
    ModelMetadata,
    RequestContext,
    ServerMetadata,
    Tensor,
    TensorMetadata,
)

METADATA = ModelMetadata(
    name="m",
    platform="fake",
    inputs=[TensorMetadata("x", "FP32", (-1,))],
    outputs=[TensorMetadata("y", "FP32", (-1,))],
)


@dataclass
class FakeServer:
    """Model `m` answers `output_elements` FP32 zeros after `delay_s`; `called` is set by an inference."""

    output_elements: int = 4
    delay_s: float = 0.0
    called: asyncio.Event = field(default_factory=asyncio.Event)
    # (model, protocol, code) of each call the listener refused before `infer`.
    rejected: list[tuple[str, str, str]] = field(default_factory=list)
    rejected_versions: list[str] = field(default_factory=list)  # the version each refusal named
    # (bytes_in, bytes_out) of each inference the listener answered.
    transfers: list[tuple[int, int]] = field(default_factory=list)

    async def live(self) -> bool:
        return True

    async def ready(self) -> bool:
        return True

    async def server_metadata(self) -> ServerMetadata:
        return ServerMetadata("fake", "0", [])

    async def model_ready(self, name: str, version: str = "") -> bool:
        return True

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        return METADATA

    async def model_config(self, name: str, version: str = "") -> ModelConfig:
        return ModelConfig("m", "fake", 0, METADATA.inputs, METADATA.outputs)

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
        self.called.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        y = np.zeros(self.output_elements, dtype=np.float32)
        return InferenceResponse(request.model_name, [Tensor("y", "FP32", y.shape, y)], id=request.id)

    def observe_transfer(self, context: RequestContext, bytes_in: int, bytes_out: int) -> None:
        self.transfers.append((bytes_in, bytes_out))

    def observe_rejected(
        self, model: str, context: RequestContext, error: GatewayError, version: str = ""
    ) -> None:
        self.rejected.append((model, context.protocol, error.code.name))
        self.rejected_versions.append(version)

"""A fake backend implementing the real `Backend` protocol, for DataPlane and cluster tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from gateway.errors import BackendUnavailable, DeadlineExceeded, ErrorCode, GatewayError
from gateway.settings import NO_OPTIONS, RouteOptions
from gateway.types import (
    NO_BATCHING,
    Batching,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    Tensor,
    TensorMetadata,
)

DOUBLE_METADATA = ModelMetadata(
    name="double",
    platform="fake",
    inputs=[TensorMetadata("x", "FP32", (-1, 3))],
    outputs=[TensorMetadata("y", "FP32", (-1, 3))],
)


def fp32_request(model: str, rows: int = 1, version: str = "", name: str = "x") -> InferenceRequest:
    data = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    return InferenceRequest(model, [Tensor(name, "FP32", data.shape, data)], model_version=version)


@dataclass
class FakeBackend:
    """Doubles its input `x` into `y`; every call is recorded; failures are switched on by fields."""

    metadata: dict[str, ModelMetadata] = field(default_factory=lambda: {"double": DOUBLE_METADATA})
    delay_s: float = 0.0
    down: set[str] = field(default_factory=set)  # endpoints that refuse connections
    unready: set[str] = field(default_factory=set)  # endpoints whose probe says "not ready"
    overloaded: set[str] = field(default_factory=set)  # endpoints that shed load (RESOURCE_EXHAUSTED)
    fail_with: BaseException | None = None  # raised by infer
    metadata_error: GatewayError | None = None
    calls: list[tuple[str, str, str, str]] = field(default_factory=list)  # (method, model, version, endpoint)
    timeouts: list[float] = field(default_factory=list)
    closed: bool = False
    needs_metadata: bool = False
    batches: Batching = NO_BATCHING  # what `batching` answers
    options: list[RouteOptions] = field(default_factory=list)  # given to each infer call
    metadata_given: list[ModelMetadata | None] = field(default_factory=list)  # given to each infer call

    def _check(self, endpoint: str) -> None:
        if endpoint in self.down:
            raise BackendUnavailable("backend 'fake' unavailable")
        if endpoint in self.overloaded:
            raise GatewayError("model 'double' is overloaded", code=ErrorCode.RESOURCE_EXHAUSTED)

    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        *,
        options: RouteOptions = NO_OPTIONS,
        metadata: ModelMetadata | None = None,
    ) -> InferenceResponse:
        self.calls.append(("infer", request.model_name, request.model_version, endpoint))
        self.options.append(options)
        self.metadata_given.append(metadata)
        self.timeouts.append(timeout_s)
        self._check(endpoint)
        if self.delay_s:
            if self.delay_s > timeout_s:  # the `Backend.infer` contract: answer or give up by the timeout
                await asyncio.sleep(timeout_s)
                raise DeadlineExceeded("backend 'fake' did not answer within the deadline")
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        x = request.inputs[0]
        y = Tensor("y", x.datatype, x.shape, x.data * 2)
        return InferenceResponse(request.model_name, [y], request.model_version, request.id)

    async def model_metadata(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> ModelMetadata:
        self.calls.append(("metadata", name, version, endpoint))
        self._check(endpoint)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.metadata_error is not None:
            raise self.metadata_error
        return self.metadata[name]

    async def batching(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> Batching:
        self.calls.append(("batching", name, version, endpoint))
        self._check(endpoint)
        return self.batches

    async def model_ready(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> bool:
        self.calls.append(("model_ready", name, version, endpoint))
        self._check(endpoint)
        if version == "404":
            raise GatewayError(f"model '{name}' version '{version}' not found", code=ErrorCode.NOT_FOUND)
        return name in self.metadata

    async def ready(self, endpoint: str) -> bool:
        self._check(endpoint)
        return endpoint not in self.unready

    async def close(self) -> None:
        self.closed = True

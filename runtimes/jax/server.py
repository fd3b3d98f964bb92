"""`JaxInferenceServer`: the Open Inference Protocol over the runtime's loaded models."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Final

import numpy as np

from gateway.errors import DeadlineExceeded, ErrorCode, GatewayError
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
from runtimes.jax.config import PLATFORM, TensorSpec
from runtimes.jax.manager import ModelManager
from runtimes.jax.metrics import RuntimeMetrics
from runtimes.jax.validation import check_inputs, select_outputs

SERVER_NAME: Final = "jax-runtime"
SERVER_VERSION: Final = "0.1.0"
EXTENSIONS: Final = ("binary_tensor_data", "model_configuration")


class JaxInferenceServer:
    """Serves the models of a `ModelManager` through the `gateway.server.InferenceServer` protocol.

    The gateway's REST and gRPC listeners take this object as they take the gateway's `DataPlane`, so
    the runtime speaks the protocol with the same code: any Open Inference Protocol client (tritonclient,
    KServe's, the gateway's `v2` backend) can call it directly.

    A request is checked against the model's signature (names, datatypes, non-batch dims) before it is
    queued, then joins the model's dynamic batch; the response carries the version that answered.

    Args:
        manager: The loaded models; started by the caller.
        metrics: Where request counts and latencies go; a private registry when omitted.
    """

    def __init__(self, manager: ModelManager, metrics: RuntimeMetrics | None = None) -> None:
        self._manager = manager
        self._metrics = metrics if metrics is not None else RuntimeMetrics()

    async def live(self) -> bool:
        """True while the process runs."""
        return True

    async def ready(self) -> bool:
        """True once the models present at start were loaded (or failed), until shutdown."""
        return self._manager.ready

    async def server_metadata(self) -> ServerMetadata:
        return ServerMetadata(SERVER_NAME, SERVER_VERSION, list(EXTENSIONS))

    async def model_ready(self, name: str, version: str = "") -> bool:
        """False while the version loads (or after it failed); raises `ModelNotFound` for an unknown one."""
        return self._manager.is_ready(name, version)

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Names, datatypes and shapes (-1 for the batch) of a ready version, and the versions served.

        Raises:
            ModelNotFound: Unknown model or version.
            ModelNotReady: The version is not loaded yet.
        """
        signature = self._manager.resolve(name, version).signature
        return dataclasses.replace(signature, name=name, versions=self._manager.versions(name))

    async def model_config(self, name: str, version: str = "") -> ModelConfig:
        """A Triton-style config: dims exclude the batch dimension, `max_batch_size` > 0."""
        config = self._manager.resolve(name, version).config
        batching = config.batching
        return ModelConfig(
            name=name,
            platform=PLATFORM,
            max_batch_size=batching.max_batch_size,
            inputs=[_metadata(spec, spec.dims) for spec in config.inputs],
            outputs=[_metadata(spec, spec.dims) for spec in config.outputs],
            backend="jax",
            max_queue_delay_microseconds=round(batching.max_queue_delay_ms * 1000),
            preferred_batch_sizes=list(batching.buckets),
        )

    async def infer(self, request: InferenceRequest, context: RequestContext) -> InferenceResponse:
        """Runs one request through its model's dynamic batcher.

        Raises:
            ModelNotFound: Unknown model or version.
            ModelNotReady: The version is loading or unloading.
            InvalidRequest: An input or requested output does not match the model (named in the message).
            DeadlineExceeded: `context.deadline` passed while the request was queued.
        """
        start = time.perf_counter()
        model, version, code = "", "", "OK"
        try:
            served = self._manager.resolve(request.model_name, request.model_version)
            model, version = served.model, served.version
            context.model_label, context.version_label = model, version
            inputs = check_inputs(request, served.signature, served.config)
            chosen = select_outputs(served.config, request.outputs)
            submitted = served.batcher.submit(inputs, deadline=context.deadline)
            if context.deadline is None:
                results = await submitted
            else:
                # Answer at the deadline even while the request waits behind busy replicas (the batcher
                # looks at deadlines only when a batch forms or starts): a REST client has no transport
                # deadline to cut the wait short, as gRPC's does.
                try:
                    async with asyncio.timeout(max(0.0, context.deadline - time.monotonic())):
                        results = await submitted
                except TimeoutError:
                    raise DeadlineExceeded(
                        f"model '{model}' version '{version}': the deadline passed before it answered"
                    ) from None
            specs = served.config.outputs
            return InferenceResponse(
                model_name=request.model_name,
                model_version=version,
                id=request.id,
                outputs=[_tensor(specs[i], results[i]) for i in chosen],
            )
        except GatewayError as exc:
            code = exc.code.name
            raise
        except asyncio.CancelledError:  # a gRPC deadline, or the client went away
            code = context.cancelled_code(time.monotonic()).name
            raise
        except Exception:
            code = ErrorCode.INTERNAL.name
            raise
        finally:
            seconds = time.perf_counter() - start if model else None
            self._metrics.observe_request(model, version, code, seconds)

    def observe_rejected(
        self, model: str, context: RequestContext, error: GatewayError, version: str = ""
    ) -> None:
        """Counts a request the listener could not decode, under the model's name (and the version asked
        for) only if it is served: labels stay bounded."""
        served = self._manager.versions(model)
        label = model if served else ""
        self._metrics.observe_request(label, version if version in served else "", error.code.name, None)

    def observe_transfer(self, context: RequestContext, bytes_in: int, bytes_out: int) -> None:
        """Counts wire bytes for requests that resolved to a model (others have no bounded label)."""
        if context.model_label:
            self._metrics.observe_transfer(context.model_label, bytes_in, bytes_out)


def _metadata(spec: TensorSpec, shape: tuple[int, ...]) -> TensorMetadata:
    return TensorMetadata(spec.name, spec.datatype, shape)


def _tensor(spec: TensorSpec, data: np.ndarray) -> Tensor:
    if spec.datatype == "BF16":
        data = data.view(np.uint16)  # the wire form of BF16 is its bit patterns
    return Tensor(spec.name, spec.datatype, tuple(data.shape), data)

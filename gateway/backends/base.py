"""The interface between the transport-free core and the code that talks to model servers.

A backend speaks one kind of model server (Open Inference Protocol, TF Serving, TorchServe) to any of
its replicas: the core picks the endpoint (`gateway.core.cluster`), the backend owns the connections to
all of them and is the one place where that server's errors become `GatewayError`s. Its methods take
and return the gateway's own types with the backend's model name; renaming is the core's job.
"""

from __future__ import annotations

from typing import Protocol

from gateway.errors import BackendError, GatewayError
from gateway.settings import NO_OPTIONS, RouteOptions
from gateway.types import Batching, InferenceRequest, InferenceResponse, ModelMetadata


class Backend(Protocol):
    """A client of one kind of model server, holding persistent connections to each endpoint.

    Every method raises only `GatewayError` subclasses for failures of the call: `BackendUnavailable`
    when the endpoint cannot be reached, `DeadlineExceeded` when it did not answer in time, the
    upstream's own code (NOT_FOUND, INVALID_ARGUMENT, ...) for a protocol-level refusal, and
    `BackendError` for anything unreadable. `endpoint` is one of the configured "host:port" strings.
    `options` are the route's options for this backend's kind (signature, version label, ...).
    """

    # True when `infer` needs the model's metadata to decode answers (TF Serving's REST JSON carries no
    # datatypes): the DataPlane then hands it the metadata from its cache, even with validation off.
    needs_metadata: bool

    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        *,
        options: RouteOptions = NO_OPTIONS,
        metadata: ModelMetadata | None = None,
    ) -> InferenceResponse:
        """Run one inference; `timeout_s` is the time left, passed on as the upstream deadline.

        Answers or raises `DeadlineExceeded` within `timeout_s`: the core arms no timer of its own around
        the call (one per request would cost more than the deadline the transport already carries).
        `metadata` is the model's, when the DataPlane has it (always, if `needs_metadata`).
        """
        ...

    async def model_metadata(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> ModelMetadata:
        """The model's OIP metadata."""
        ...

    async def batching(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> Batching:
        """What the server says of the model's batching (`NO_BATCHING` when it says nothing); the
        Triton-style model configuration is derived from this and the metadata, in one place."""
        ...

    async def model_ready(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> bool:
        """Whether the model can serve requests on this endpoint."""
        ...

    async def ready(self, endpoint: str) -> bool:
        """Whether the server at `endpoint` is ready (the health probe); False rather than raising."""
        ...

    async def close(self) -> None:
        """Close every connection; the backend is unusable afterwards."""
        ...


def readable(backend: str, exc: GatewayError) -> BackendError:
    """A codec's complaint about a backend's answer, as the backend's fault and prefixed with its name."""
    return BackendError(f"backend '{backend}': {exc.message}")

"""`TorchServeBackend`: a client of TorchServe serving models packaged with the project's handler, over
gRPC (`org.pytorch.serve.grpc.inference.InferenceAPIsService`: Predictions, Ping) or REST
(`POST /predictions/{model}[/{version}]`, `GET /ping`).

Tensors travel in the project's binary payload (`gateway.codecs.torchserve.payload`), as the request's
one input (`input["data"]` over gRPC, the body over REST). What is TorchServe's own here:
- the inference key (`credentials.BearerKey`) on every call; a call TorchServe refuses for its key is
  retried once after the key file is read again (a renewed key), then is the backend's failure (502),
  never the client's;
- OIP metadata is the archive's signature, which the handler answers to a metadata query (a Predictions
  call, so it needs only the inference key; TorchServe's management API stays on loopback);
- a model is ready when that query is answered (TorchServe refuses it at once, 503 / INTERNAL, while the
  model has no worker), or when the query is still queued behind the model's inferences as the probe's
  time runs out and Ping says Healthy: busy, not unready (`model_ready`);
- the server is ready when Ping says Healthy;
- it declares no batching to the gateway (TorchServe batches in its frontend: `batchSize`, `maxBatchDelay`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

import grpc
import httpx
from google.protobuf.message import DecodeError

from gateway.backends.base import readable
from gateway.backends.credentials import BearerKey
from gateway.backends.grpc_client import grpc_error, open_channel
from gateway.backends.http_client import pooled_client, send, status_error
from gateway.codecs.protowire import WireError
from gateway.codecs.torchserve import grpc_wire, payload
from gateway.codecs.torchserve.signature import loads_signature
from gateway.errors import (
    BackendError,
    ConfigError,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    ModelNotFound,
    Overloaded,
    clip,
)
from gateway.proto.torchserve import inference_pb2 as pb
from gateway.settings import NO_OPTIONS, RouteOptions, TorchServeBackendSettings, TorchServeRouteOptions
from gateway.types import NO_BATCHING, Batching, InferenceRequest, InferenceResponse, ModelMetadata

log = logging.getLogger(__name__)

_SERVICE: Final = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/"
PLATFORM: Final = "pytorch_torchserve"
# The name of the payload among a PredictionsRequest's inputs (the handler reads the first input).
_INPUT: Final = "data"

T = TypeVar("T")


def _probe_timeout_s(settings: TorchServeBackendSettings) -> float:
    """A readiness probe's time: within the DataPlane's own bound on a readiness call (`timeout_s`), so a
    probe's time running out is seen here (busy: see `TorchServeBackend.model_ready`), not as the
    DataPlane's timeout (not ready)."""
    return min(settings.health_check_timeout_s, settings.timeout_s / 2)


def _version(request_version: str, options: RouteOptions) -> str:
    if isinstance(options, TorchServeRouteOptions) and options.version:
        return options.version
    return request_version


class _Transport(Protocol):
    async def predict(
        self, model: str, version: str, body: payload.Framed, endpoint: str, timeout_s: float
    ) -> bytes: ...
    async def ping(self, endpoint: str) -> bool: ...
    async def close(self) -> None: ...


class TorchServeBackend:
    """A TorchServe backend (implements `gateway.backends.base.Backend`).

    Create it inside the running event loop: the gRPC channels bind to it.

    Args:
        name: The backend's configured name (error messages).
        settings: Its settings; `protocol` picks gRPC or REST.
        http_transport: REST only: an httpx transport to use instead of the network (tests).
    """

    needs_metadata = False  # the payload carries datatypes and shapes

    def __init__(
        self,
        name: str,
        settings: TorchServeBackendSettings,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._timeout_s = settings.timeout_s
        self._probe_timeout_s = _probe_timeout_s(settings)
        secret = settings.inference_key.get_secret_value() if settings.inference_key is not None else ""
        self._key = BearerKey(name, key=secret, path=settings.inference_key_file)
        self._transport: _Transport
        if settings.protocol == "grpc":
            self._transport = _GrpcTransport(name, settings, self._key)
        else:
            self._transport = _RestTransport(name, settings, self._key, http_transport)

    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        *,
        options: RouteOptions = NO_OPTIONS,
        metadata: ModelMetadata | None = None,
    ) -> InferenceResponse:
        """Run one request through the project's handler on `endpoint`."""
        outputs = [o.name for o in request.outputs] if request.outputs else None
        body = payload.encode_request_parts(request.inputs, outputs)
        version = _version(request.model_version, options)
        reply = await self._transport.predict(request.model_name, version, body, endpoint, timeout_s)
        if not reply.startswith(payload.MAGIC):
            # TorchServe 0.12 sends the handler's per-request status only over REST: over gRPC a refused
            # request arrives as a successful reply whose prediction is the handler's error body.
            raise _handler_error(self.name, reply)
        try:
            tensors = payload.decode_response(reply)
        except BackendError as exc:
            raise readable(self.name, exc) from None
        return InferenceResponse(request.model_name, tensors, model_version=version, id=request.id)

    async def model_metadata(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> ModelMetadata:
        """The archive's signature (the handler answers a metadata query with it)."""
        return await self._signature(name, _version(version, options), endpoint, self._timeout_s)

    async def _signature(self, name: str, version: str, endpoint: str, timeout_s: float) -> ModelMetadata:
        query = payload.encode_metadata_request()
        reply = await self._transport.predict(
            name, version, payload.Framed([query], len(query)), endpoint, timeout_s
        )
        code, _kind, _message = payload.decode_error(reply)
        if code:  # the handler's error body (over gRPC, in an OK reply), not the signature
            raise _handler_error(self.name, reply)
        try:
            signature = loads_signature(reply, "the model's signature")
        except ConfigError as exc:
            raise BackendError(f"backend '{self.name}': {exc}") from None
        versions = [version] if version else []
        return ModelMetadata(name, PLATFORM, list(signature.inputs), list(signature.outputs), versions)

    async def batching(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> Batching:
        """TorchServe batches in its frontend and does not say how over the inference API."""
        return NO_BATCHING

    async def model_ready(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> bool:
        """Whether a worker answers the model's metadata query (NOT_FOUND for a model it does not have).

        The query waits in the model's job queue behind the inferences already there, and TorchServe
        queues a request only for a model that has workers: one without is refused at once (checked with
        0.12.0: gRPC INTERNAL / HTTP 503 "has no worker to serve inference request"). So a query still
        waiting when the probe's time (`health_check_timeout_s`) is up means a busy model, and it reads as
        ready while Ping says the server is Healthy; a busy model is not taken for a missing one. A full
        queue is refused at once with the same answer as no worker, so a model at the limit of its queue
        reads not ready: it cannot take a request then. A probe that ran out of time leaves its query in
        the queue; the handler answers it later, cheaply.
        """
        try:
            await self._signature(name, _version(version, options), endpoint, self._probe_timeout_s)
        except GatewayError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                raise
            if exc.code is ErrorCode.DEADLINE_EXCEEDED:
                return await self.ready(endpoint)
            return False
        return True

    async def ready(self, endpoint: str) -> bool:
        """Whether Ping says Healthy; False when it cannot be asked."""
        return await self._transport.ping(endpoint)

    async def close(self) -> None:
        await self._transport.close()


async def _with_fresh_key(key: BearerKey, backend: str, call: Callable[[str], Awaitable[T]]) -> T:
    """Run `call` with the current `Authorization` value; if TorchServe refused it, read the key again and
    retry once when the key now differs from the one refused: renewed in the file, or already read again
    by a concurrent call (which is why the comparison is with the value this call used, not "did my
    refresh change it")."""
    used = key.header()
    try:
        return await call(used)
    except _KeyRefused:
        pass
    key.refresh()
    current = key.header()
    if current == used:
        raise BackendError(f"backend '{backend}' refused the gateway's inference key")
    log.info("backend '%s': retrying with the renewed inference key", backend)
    try:
        return await call(current)
    except _KeyRefused:
        raise BackendError(f"backend '{backend}' refused the gateway's inference key") from None


class _KeyRefused(Exception):
    """TorchServe refused the inference key (internal: becomes a BackendError or a retry)."""


class _GrpcTransport:
    """Predictions and Ping over one persistent channel per endpoint, the key in the call's metadata."""

    def __init__(self, name: str, settings: TorchServeBackendSettings, key: BearerKey) -> None:
        self._name = name
        self._key = key
        self._probe_timeout_s = _probe_timeout_s(settings)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._predictions: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._pings: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        for endpoint in settings.endpoints:
            channel = open_channel(endpoint, settings.max_message_bytes)
            self._channels[endpoint] = channel
            self._predictions[endpoint] = channel.unary_unary(_SERVICE + "Predictions")
            self._pings[endpoint] = channel.unary_unary(_SERVICE + "Ping")

    async def _call(
        self,
        rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        message: bytes,
        timeout_s: float,
        header: str,
        model: str = "",
    ) -> bytes:
        metadata = (("authorization", header),) if header else ()
        try:
            reply: bytes = await rpc(message, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise _KeyRefused from None
            raise _torchserve_grpc_error(self._name, exc, model) from None
        return reply

    async def predict(
        self, model: str, version: str, body: payload.Framed, endpoint: str, timeout_s: float
    ) -> bytes:
        wire = grpc_wire.predictions_request(model, version, _INPUT, body.parts, body.size)
        rpc = self._predictions[endpoint]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s  # one deadline for the call and its retry with a renewed key

        def call(header: str) -> Awaitable[bytes]:
            return self._call(rpc, wire, max(deadline - loop.time(), 0.001), header, model)

        reply = await _with_fresh_key(self._key, self._name, call)
        try:
            return grpc_wire.prediction(reply)
        except WireError:
            raise BackendError(
                f"backend '{self._name}' answered with bytes that are not a PredictionResponse"
            ) from None

    async def ping(self, endpoint: str) -> bool:
        try:
            reply = await self._call(self._pings[endpoint], b"", self._probe_timeout_s, self._key.header())
            return _healthy(pb.TorchServeHealthResponse.FromString(reply).health.encode())
        except (GatewayError, _KeyRefused, DecodeError):  # any failure of the probe is "not ready"
            return False

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


def _healthy(health: bytes) -> bool:
    """Whether TorchServe's health JSON says exactly "Healthy" (older releases also said "Partial
    Healthy", which a substring test would take for healthy)."""
    try:
        doc = json.loads(health)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("status") == "Healthy"


# How TorchServe 0.12's gRPC API says a model (or a version of it) is not there: INTERNAL, with the Java
# exception's name in the details.
_NOT_FOUND_EXCEPTIONS: Final = ("ModelNotFoundException", "ModelVersionNotFoundException")


def _torchserve_grpc_error(backend: str, exc: grpc.aio.AioRpcError, model: str) -> GatewayError:
    """A failed gRPC call: an unknown model or version is NOT_FOUND (TorchServe says INTERNAL, naming
    the exception); the rest by the shared rules."""
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.INTERNAL and any(name in details for name in _NOT_FOUND_EXCEPTIONS):
        return ModelNotFound(model)
    return grpc_error(backend, exc)


def _handler_error(backend: str, body: bytes) -> GatewayError:
    """The project's handler refused one request (its body in TorchServe's error shape): a 400 is the
    client's (the handler's message names the fault), anything else the backend's."""
    code, kind, message = payload.decode_error(body)
    if code == 400 and message:
        return GatewayError(message, code=ErrorCode.INVALID_ARGUMENT)
    if code == 404 and message:
        return GatewayError(message, code=ErrorCode.NOT_FOUND)
    log.warning("backend '%s': the model failed (%s %s): %s", backend, code, clip(kind, 64), clip(message))
    return BackendError(f"backend '{backend}': the model failed ({clip(kind, 64) or 'not a tensor payload'})")


class _RestTransport:
    """`/predictions` and `/ping` on one pooled httpx client, the key in the Authorization header."""

    def __init__(
        self,
        name: str,
        settings: TorchServeBackendSettings,
        key: BearerKey,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self._name = name
        self._key = key
        self._probe_timeout_s = _probe_timeout_s(settings)
        self._client = pooled_client(settings.timeout_s, transport)

    @staticmethod
    def _headers(header: str, **extra: str) -> dict[str, str]:
        return {**extra, "authorization": header} if header else dict(extra)

    async def _send(self, method: str, url: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        reply = await send(self._client, self._name, method, url, timeout_s, **kwargs)
        if payload.is_key_refusal(reply.status_code, reply.content):
            raise _KeyRefused
        return reply

    async def predict(
        self, model: str, version: str, body: payload.Framed, endpoint: str, timeout_s: float
    ) -> bytes:
        url = f"http://{endpoint}/predictions/{quote(model, safe='')}"
        content = body.join()
        if version:
            url += "/" + quote(version, safe="")

        async def call(header: str) -> httpx.Response:
            headers = self._headers(header, **{"content-type": payload.CONTENT_TYPE})
            return await self._send("POST", url, timeout_s, content=content, headers=headers)

        try:
            async with asyncio.timeout(timeout_s):  # one deadline for the call and its retry with a new key
                reply = await _with_fresh_key(self._key, self._name, call)
        except TimeoutError:
            raise DeadlineExceeded(f"backend '{self._name}' did not answer within the deadline") from None
        if reply.status_code == 503:
            raise _unavailable(self._name, reply)
        if reply.status_code != 200:
            raise status_error(self._name, reply, _error_message)
        return reply.content

    async def ping(self, endpoint: str) -> bool:
        try:
            reply = await self._send(
                "GET",
                f"http://{endpoint}/ping",
                self._probe_timeout_s,
                headers=self._headers(self._key.header()),
            )
        except (GatewayError, _KeyRefused):
            return False
        return reply.status_code == 200 and _healthy(reply.content)

    async def close(self) -> None:
        await self._client.aclose()


def _unavailable(backend: str, reply: httpx.Response) -> GatewayError:
    """TorchServe's 503s: a full job queue sheds load (RESOURCE_EXHAUSTED: the DataPlane moves the call to
    another endpoint without ejecting this one); a failed prediction is the model's failure. Neither means
    the endpoint is down, which a plain 503 would (and eject it)."""
    _code, kind, _message = payload.decode_error(reply.content)
    if kind == "ServiceUnavailableException":
        return Overloaded(f"backend '{backend}' is overloaded")
    return BackendError(f"backend '{backend}': the model failed ({clip(kind, 64) or 'HTTP 503'})")


def _error_message(reply: httpx.Response) -> str | None:
    """The message of TorchServe's `{"code", "type", "message"}` error body, or None."""
    code, _kind, message = payload.decode_error(reply.content)
    return message if code and message else None

"""`V2Backend`: a client of any Open Inference Protocol (KServe v2) server, over gRPC or REST.

Connections are made once: over gRPC one persistent `grpc.aio` channel per endpoint, created with the
backend (HTTP/2 multiplexes every concurrent call on it); over REST one shared `httpx.AsyncClient` whose
pool keeps connections alive. No request pays for a connection setup.

Upstream failures become `GatewayError`s at one boundary, by the rules every backend kind shares
(`grpc_client.map_grpc_errors`, `http_client.map_http_errors` / `status_error`); channels and the HTTP
pool come from the same modules, so this module is the OIP codec's adapter and little else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

import grpc
import httpx
import orjson
from google.protobuf.message import DecodeError

from gateway.backends.base import readable
from gateway.backends.grpc_client import map_grpc_errors, open_channel
from gateway.backends.http_client import json_object, pooled_client, send, status_error
from gateway.codecs.v2 import protobuf as pbcodec
from gateway.codecs.v2 import rest as restcodec
from gateway.errors import (
    BackendError,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
)
from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc
from gateway.settings import NO_OPTIONS, RouteOptions, V2BackendSettings
from gateway.types import Batching, InferenceRequest, InferenceResponse, ModelConfig, ModelMetadata

log = logging.getLogger(__name__)

_HEADER_LENGTH: Final = "Inference-Header-Content-Length"
_MODEL_INFER: Final = "/inference.GRPCInferenceService/ModelInfer"

Reply = TypeVar("Reply")
T = TypeVar("T")


def _decode_infer_response(data: bytes) -> InferenceResponse:
    try:
        message = pb.ModelInferResponse.FromString(data)
    except DecodeError:
        raise BackendError("answered with bytes that are not a ModelInferResponse") from None
    return pbcodec.response_from_proto(message)


class _Transport(Protocol):
    async def infer(
        self, request: InferenceRequest, endpoint: str, timeout_s: float
    ) -> InferenceResponse: ...
    async def model_metadata(self, name: str, version: str, endpoint: str) -> ModelMetadata: ...
    async def model_config(self, name: str, version: str, endpoint: str) -> ModelConfig: ...
    async def model_ready(self, name: str, version: str, endpoint: str) -> bool: ...
    async def ready(self, endpoint: str) -> bool: ...
    async def close(self) -> None: ...


class V2Backend:
    """An Open Inference Protocol backend (implements `gateway.backends.base.Backend`); it takes no route
    options.

    Create it inside the running event loop: the gRPC channels bind to it.

    Args:
        name: The backend's configured name (error messages).
        settings: Its settings; `protocol` picks gRPC or REST.
        http_transport: REST only: an httpx transport to use instead of the network (tests).
    """

    needs_metadata = False  # OIP answers carry their datatypes and shapes

    def __init__(
        self,
        name: str,
        settings: V2BackendSettings,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._transport: _Transport
        if settings.protocol == "grpc":
            self._transport = _GrpcTransport(name, settings)
        else:
            self._transport = _RestTransport(name, settings, http_transport)

    def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        *,
        options: RouteOptions = NO_OPTIONS,
        metadata: ModelMetadata | None = None,
    ) -> Coroutine[Any, Any, InferenceResponse]:
        """Run one inference on `endpoint` with an upstream deadline of `timeout_s`.

        The transport's coroutine itself (awaited by the caller, as an `async def`'s would be): no frame
        of its own on every inference's path.
        """
        return self._transport.infer(request, endpoint, timeout_s)

    async def model_metadata(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> ModelMetadata:
        """The model's metadata from `endpoint`."""
        return await self._transport.model_metadata(name, version, endpoint)

    async def batching(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> Batching:
        """The batching the server's model configuration declares (Triton's and the JAX runtime's)."""
        config = await self._transport.model_config(name, version, endpoint)
        return Batching(
            config.max_batch_size,
            tuple(config.preferred_batch_sizes),
            config.max_queue_delay_microseconds,
        )

    async def model_ready(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> bool:
        """Whether `endpoint` reports the model ready."""
        return await self._transport.model_ready(name, version, endpoint)

    async def ready(self, endpoint: str) -> bool:
        """Whether `endpoint` reports itself ready; False when it cannot be asked."""
        return await self._transport.ready(endpoint)

    async def close(self) -> None:
        """Close all connections."""
        await self._transport.close()


class _GrpcTransport:
    """OIP over gRPC: one persistent channel and stub per endpoint."""

    def __init__(self, name: str, settings: V2BackendSettings) -> None:
        self._name = name
        self._timeout_s = settings.timeout_s
        self._probe_timeout_s = settings.health_check_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, inference_pb2_grpc.GRPCInferenceServiceStub] = {}
        self._infer_calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        for endpoint in settings.endpoints:
            channel = open_channel(endpoint, settings.max_message_bytes)
            self._channels[endpoint] = channel
            self._stubs[endpoint] = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            # ModelInfer on bytes: the codec serializes (reusing a client's message when it can) and parses.
            self._infer_calls[endpoint] = channel.unary_unary(_MODEL_INFER)

    async def _call(
        self,
        rpc: Callable[..., Awaitable[Reply]],
        message: Any,
        timeout_s: float,
        decode: Callable[[Reply], T],
    ) -> T:
        """One unary call with the upstream's errors mapped and its answer decoded."""
        with map_grpc_errors(self._name):
            reply = await rpc(message, timeout=timeout_s)
        try:
            return decode(reply)
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def infer(self, request: InferenceRequest, endpoint: str, timeout_s: float) -> InferenceResponse:
        try:
            message = pbcodec.request_to_wire(request)
        except ValueError as exc:  # a parameter protobuf cannot carry
            raise InvalidRequest(str(exc)) from None
        # `_call` written out: this is every inference's path, and a frame less in the chain of awaits
        # is a frame less to resume each time the call wakes up.
        with map_grpc_errors(self._name):
            reply = await self._infer_calls[endpoint](message, timeout=timeout_s)
        try:
            return _decode_infer_response(reply)
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def model_metadata(self, name: str, version: str, endpoint: str) -> ModelMetadata:
        request = pb.ModelMetadataRequest(name=name, version=version)
        stub = self._stubs[endpoint]
        decode = pbcodec.model_metadata_from_proto
        return await self._call(stub.ModelMetadata, request, self._timeout_s, decode)

    async def model_config(self, name: str, version: str, endpoint: str) -> ModelConfig:
        request = pb.ModelConfigRequest(name=name, version=version)
        stub = self._stubs[endpoint]
        return await self._call(
            stub.ModelConfig, request, self._timeout_s, lambda r: pbcodec.model_config_from_proto(r.config)
        )

    async def model_ready(self, name: str, version: str, endpoint: str) -> bool:
        request = pb.ModelReadyRequest(name=name, version=version)
        with map_grpc_errors(self._name):
            reply = await self._stubs[endpoint].ModelReady(request, timeout=self._timeout_s)
        return bool(reply.ready)

    async def ready(self, endpoint: str) -> bool:
        try:
            reply = await self._stubs[endpoint].ServerReady(
                pb.ServerReadyRequest(), timeout=self._probe_timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.ready)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class _RestTransport:
    """OIP over HTTP/1.1 on one pooled httpx client: with the binary tensor extension both ways, or with
    JSON tensors both ways for servers that lack it (`binary_data: false`, e.g. MLServer)."""

    def __init__(
        self, name: str, settings: V2BackendSettings, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._name = name
        self._timeout_s = settings.timeout_s
        self._probe_timeout_s = settings.health_check_timeout_s
        self._binary = settings.binary_data
        self._client = pooled_client(settings.timeout_s, transport)

    @staticmethod
    def _url(endpoint: str, name: str = "", version: str = "", suffix: str = "") -> str:
        url = f"http://{endpoint}/v2"
        if name:
            url += "/models/" + quote(name, safe="")
            if version:
                url += "/versions/" + quote(version, safe="")
        return url + suffix

    async def _send(self, method: str, url: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        return await send(self._client, self._name, method, url, timeout_s, **kwargs)

    def _status_error(self, reply: httpx.Response) -> GatewayError:
        return status_error(self._name, reply, self._error_message)

    @staticmethod
    def _error_message(reply: httpx.Response) -> str | None:
        """The `error` of an OIP error body, or None when the body is not one."""
        try:
            doc = orjson.loads(reply.content)
        except orjson.JSONDecodeError:
            return None
        message = doc.get("error") if isinstance(doc, dict) else None
        return message if isinstance(message, str) and message else None

    def _json(self, reply: httpx.Response) -> dict[str, Any]:
        return json_object(self._name, reply, self._error_message)

    async def infer(self, request: InferenceRequest, endpoint: str, timeout_s: float) -> InferenceResponse:
        url = self._url(endpoint, request.model_name, request.model_version, "/infer")
        body, header_length = restcodec.encode_infer_request(request, binary=self._binary)
        if header_length is not None and not self._binary:
            # The codec still frames what JSON cannot carry; a server without the extension would
            # misread it, so say why here instead of passing on the server's confusion.
            raise InvalidRequest(
                f"backend '{self._name}' takes JSON tensors only (binary_data: false), and JSON "
                "cannot carry this request's BF16 or non-UTF-8 BYTES inputs"
            )
        if header_length is None:
            headers = {"content-type": "application/json"}
        else:
            headers = {"content-type": "application/octet-stream", _HEADER_LENGTH: str(header_length)}
        reply = await self._send("POST", url, timeout_s, content=body, headers=headers)
        if reply.status_code != 200:
            raise self._status_error(reply)
        raw_length = reply.headers.get(_HEADER_LENGTH)
        try:
            length = None if raw_length is None else int(raw_length)
        except ValueError:
            raise BackendError(f"backend '{self._name}' sent a bad {_HEADER_LENGTH} header") from None
        try:
            return restcodec.decode_infer_response(reply.content, length)
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def model_metadata(self, name: str, version: str, endpoint: str) -> ModelMetadata:
        reply = await self._send("GET", self._url(endpoint, name, version), self._timeout_s)
        try:
            return restcodec.model_metadata_from_json(self._json(reply))
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def model_config(self, name: str, version: str, endpoint: str) -> ModelConfig:
        reply = await self._send("GET", self._url(endpoint, name, version, "/config"), self._timeout_s)
        try:
            return restcodec.model_config_from_json(self._json(reply))
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def model_ready(self, name: str, version: str, endpoint: str) -> bool:
        reply = await self._send("GET", self._url(endpoint, name, version, "/ready"), self._timeout_s)
        # Judge by the status code (PROTOCOLS §6.10): bodies differ between servers.
        if reply.status_code == 200:
            return True
        if reply.status_code == 404:  # an unknown model or version, as over gRPC (NOT_FOUND)
            raise ModelNotFound(name, version)
        if 400 <= reply.status_code < 500 or reply.status_code == 503:
            return False
        raise self._status_error(reply)

    async def ready(self, endpoint: str) -> bool:
        try:
            reply = await self._send(
                "GET", self._url(endpoint, suffix="/health/ready"), self._probe_timeout_s
            )
        except GatewayError:
            return False
        return reply.status_code == 200

    async def close(self) -> None:
        await self._client.aclose()

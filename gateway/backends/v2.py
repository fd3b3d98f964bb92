"""`V2Backend`: a client of any Open Inference Protocol (KServe v2) server, over gRPC or REST.

Connections are made once: over gRPC one persistent `grpc.aio` channel per endpoint, created with the
backend (HTTP/2 multiplexes every concurrent call on it); over REST one shared `httpx.AsyncClient` whose
pool keeps connections alive. No request pays for a connection setup.

Upstream failures become `GatewayError`s at this one boundary, in the manner of httpx's
`map_exceptions`: an unreachable endpoint is `BackendUnavailable` and a timeout `DeadlineExceeded`,
both naming the backend and nothing of the transport's internals; a protocol-level refusal
(INVALID_ARGUMENT, NOT_FOUND, ...) keeps its code and the upstream's message, which the protocol writes
for clients; an upstream INTERNAL error or anything unreadable is `BackendError`, details logged only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

import grpc
import httpx
import orjson
from google.protobuf.message import DecodeError

from gateway.codecs.v2 import protobuf as pbcodec
from gateway.codecs.v2 import rest as restcodec
from gateway.errors import (
    BackendError,
    BackendUnavailable,
    DeadlineExceeded,
    ErrorCode,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    Unimplemented,
)
from gateway.proto import inference_pb2 as pb
from gateway.proto import inference_pb2_grpc
from gateway.settings import V2BackendSettings
from gateway.types import InferenceRequest, InferenceResponse, ModelConfig, ModelMetadata

log = logging.getLogger(__name__)

# Keepalive pings only while calls are active: servers with gRPC's default policy punish pings on an
# idle connection (GOAWAY "too_many_pings"). A minute is well above their 10 s to 5 min minimums.
_KEEPALIVE_TIME_MS: Final = 60_000
_KEEPALIVE_TIMEOUT_MS: Final = 20_000
_MAX_METADATA_BYTES: Final = 256 * 1024
# REST connection pool, shared by all endpoints: enough kept-alive connections that a busy gateway
# does not close and reopen them, bounded so a stalled backend cannot exhaust file descriptors.
_HTTP_MAX_CONNECTIONS: Final = 512
_HTTP_KEEPALIVE_EXPIRY_S: Final = 60.0

# Upstream codes that are the client's business: passed on with the upstream's own message.
_GRPC_PASS_THROUGH: Final[dict[grpc.StatusCode, ErrorCode]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ErrorCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE: ErrorCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS: ErrorCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNIMPLEMENTED: ErrorCode.UNIMPLEMENTED,
}
_HTTP_PASS_THROUGH: Final[dict[int, ErrorCode]] = {
    400: ErrorCode.INVALID_ARGUMENT,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.ALREADY_EXISTS,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RESOURCE_EXHAUSTED,
    501: ErrorCode.UNIMPLEMENTED,
}

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


def _refusal(code: ErrorCode, message: str) -> GatewayError:
    # Unimplemented keeps its class: the DataPlane treats "no metadata here" specially.
    return Unimplemented(message) if code is ErrorCode.UNIMPLEMENTED else GatewayError(message, code=code)


def _readable(backend: str, exc: BackendError) -> BackendError:
    """A codec's complaint about a response, prefixed with the backend at fault."""
    return BackendError(f"backend '{backend}': {exc.message}")


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
    """An Open Inference Protocol backend (implements `gateway.backends.base.Backend`).

    Create it inside the running event loop: the gRPC channels bind to it.

    Args:
        name: The backend's configured name (error messages).
        settings: Its settings; `protocol` picks gRPC or REST.
        http_transport: REST only: an httpx transport to use instead of the network (tests).
    """

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

    async def infer(self, request: InferenceRequest, endpoint: str, timeout_s: float) -> InferenceResponse:
        """Run one inference on `endpoint` with an upstream deadline of `timeout_s`."""
        return await self._transport.infer(request, endpoint, timeout_s)

    async def model_metadata(self, name: str, version: str, endpoint: str) -> ModelMetadata:
        """The model's metadata from `endpoint`."""
        return await self._transport.model_metadata(name, version, endpoint)

    async def model_config(self, name: str, version: str, endpoint: str) -> ModelConfig:
        """The model's Triton-style configuration from `endpoint`."""
        return await self._transport.model_config(name, version, endpoint)

    async def model_ready(self, name: str, version: str, endpoint: str) -> bool:
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
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0),
            # An endpoint may be a DNS name with several addresses (a Kubernetes headless Service):
            # spread calls over all of them rather than gRPC's default of the first that connects.
            ("grpc.lb_policy_name", "round_robin"),
            # gRPC's default 8 KiB soft limit on received metadata would turn a backend's long error
            # details into RESOURCE_EXHAUSTED; take them, the gateway clips what it passes on.
            ("grpc.max_metadata_size", _MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", _MAX_METADATA_BYTES),
        ]
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, inference_pb2_grpc.GRPCInferenceServiceStub] = {}
        self._infer_calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        for endpoint in settings.endpoints:
            channel = grpc.aio.insecure_channel(endpoint, options=options)
            channel.get_state(try_to_connect=True)  # start connecting now, not on the first request
            self._channels[endpoint] = channel
            self._stubs[endpoint] = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            # ModelInfer on bytes: the codec serializes (reusing a client's message when it can) and parses.
            self._infer_calls[endpoint] = channel.unary_unary(_MODEL_INFER)

    def _error(self, exc: grpc.aio.AioRpcError) -> GatewayError:
        code = exc.code()
        details = exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            log.debug("backend '%s' unavailable: %s", self._name, details)
            return BackendUnavailable(f"backend '{self._name}' unavailable")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"backend '{self._name}' did not answer within the deadline")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "metadata size exceeds" in details:
            # Our channel refused the backend's status details as too large: the backend's fault, and
            # not load to shed (passed on as RESOURCE_EXHAUSTED it would read "overloaded", and be retried).
            log.warning("backend '%s': %s", self._name, details[:300])
            return BackendError(
                f"backend '{self._name}' answered with status details over the metadata limit"
            )
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in details:
            # gRPC's own message size limit, not a quota to retry against: our channel refusing the
            # answer is the backend's fault; anything else refused the client's request as too large.
            log.warning("backend '%s': %s", self._name, details)
            if details.startswith("CLIENT: Received"):
                return BackendError(f"backend '{self._name}' answered with a message over max_message_bytes")
            return PayloadTooLarge(f"request too large for backend '{self._name}'")
        mapped = _GRPC_PASS_THROUGH.get(code)
        if mapped is not None:
            return _refusal(mapped, details or f"backend '{self._name}' refused the request ({code.name})")
        log.warning("backend '%s' failed with %s: %s", self._name, code.name, details)
        return BackendError(f"backend '{self._name}' failed ({code.name})")

    async def _call(
        self,
        rpc: Callable[..., Awaitable[Reply]],
        message: Any,
        timeout_s: float,
        decode: Callable[[Reply], T],
    ) -> T:
        """One unary call with the upstream's errors mapped and its answer decoded."""
        try:
            reply = await rpc(message, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        try:
            return decode(reply)
        except BackendError as exc:
            raise _readable(self._name, exc) from None

    async def infer(self, request: InferenceRequest, endpoint: str, timeout_s: float) -> InferenceResponse:
        try:
            message = pbcodec.request_to_wire(request)
        except ValueError as exc:  # a parameter protobuf cannot carry
            raise InvalidRequest(str(exc)) from None
        return await self._call(self._infer_calls[endpoint], message, timeout_s, _decode_infer_response)

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
        try:
            reply = await self._stubs[endpoint].ModelReady(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
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
    """OIP over HTTP/1.1 with the binary tensor extension both ways, on one pooled httpx client."""

    def __init__(
        self, name: str, settings: V2BackendSettings, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._name = name
        self._timeout_s = settings.timeout_s
        self._probe_timeout_s = settings.health_check_timeout_s
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=_HTTP_MAX_CONNECTIONS,
                max_keepalive_connections=_HTTP_MAX_CONNECTIONS,
                keepalive_expiry=_HTTP_KEEPALIVE_EXPIRY_S,
            ),
            timeout=httpx.Timeout(settings.timeout_s),
            trust_env=False,  # backend traffic stays direct, whatever HTTP_PROXY says
            transport=transport,
        )

    @staticmethod
    def _url(endpoint: str, name: str = "", version: str = "", suffix: str = "") -> str:
        url = f"http://{endpoint}/v2"
        if name:
            url += "/models/" + quote(name, safe="")
            if version:
                url += "/versions/" + quote(version, safe="")
        return url + suffix

    async def _send(self, method: str, url: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, timeout=timeout_s, **kwargs)
        except httpx.ConnectTimeout:
            raise BackendUnavailable(f"backend '{self._name}' unavailable") from None
        except httpx.TimeoutException:
            raise DeadlineExceeded(f"backend '{self._name}' did not answer within the deadline") from None
        except httpx.TransportError as exc:
            log.debug("backend '%s' unavailable: %r", self._name, exc)
            raise BackendUnavailable(f"backend '{self._name}' unavailable") from None
        except httpx.HTTPError as exc:
            log.warning("backend '%s' failed: %r", self._name, exc)
            raise BackendError(f"backend '{self._name}' failed") from None

    def _status_error(self, reply: httpx.Response) -> GatewayError:
        status = reply.status_code
        if status == 503:
            return BackendUnavailable(f"backend '{self._name}' unavailable")
        if status == 504:
            return DeadlineExceeded(f"backend '{self._name}' did not answer within the deadline")
        mapped = _HTTP_PASS_THROUGH.get(status)
        message = self._error_message(reply)
        if mapped is not None and message is not None:
            return _refusal(mapped, message)
        log.warning("backend '%s' answered HTTP %d: %r", self._name, status, reply.content[:200])
        return BackendError(f"backend '{self._name}' answered HTTP {status}")

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
        if reply.status_code != 200:
            raise self._status_error(reply)
        try:
            doc = orjson.loads(reply.content)
        except orjson.JSONDecodeError:
            raise BackendError(f"backend '{self._name}' answered with invalid JSON") from None
        if not isinstance(doc, dict):
            raise BackendError(
                f"backend '{self._name}' answered with a JSON {type(doc).__name__}, not an object"
            )
        return doc

    async def infer(self, request: InferenceRequest, endpoint: str, timeout_s: float) -> InferenceResponse:
        url = self._url(endpoint, request.model_name, request.model_version, "/infer")
        body, header_length = restcodec.encode_infer_request(request, binary=True)
        if header_length is None:
            headers = {"content-type": "application/json"}
        else:
            headers = {"content-type": "application/octet-stream", _HEADER_LENGTH: str(header_length)}
        try:
            # httpx's timeout bounds each read and write, not the whole exchange: the deadline does.
            async with asyncio.timeout(timeout_s):
                reply = await self._send("POST", url, timeout_s, content=body, headers=headers)
        except TimeoutError:
            raise DeadlineExceeded(f"backend '{self._name}' did not answer within the deadline") from None
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
            raise _readable(self._name, exc) from None

    async def model_metadata(self, name: str, version: str, endpoint: str) -> ModelMetadata:
        reply = await self._send("GET", self._url(endpoint, name, version), self._timeout_s)
        try:
            return restcodec.model_metadata_from_json(self._json(reply))
        except BackendError as exc:
            raise _readable(self._name, exc) from None

    async def model_config(self, name: str, version: str, endpoint: str) -> ModelConfig:
        reply = await self._send("GET", self._url(endpoint, name, version, "/config"), self._timeout_s)
        try:
            return restcodec.model_config_from_json(self._json(reply))
        except BackendError as exc:
            raise _readable(self._name, exc) from None

    async def model_ready(self, name: str, version: str, endpoint: str) -> bool:
        reply = await self._send("GET", self._url(endpoint, name, version, "/ready"), self._timeout_s)
        # Judge by the status code (PROTOCOLS §6.10): bodies differ between servers.
        if reply.status_code == 200:
            return True
        if reply.status_code == 404:  # an unknown model or version, as over gRPC (NOT_FOUND)
            raise GatewayError(f"model '{name}' not found", code=ErrorCode.NOT_FOUND)
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

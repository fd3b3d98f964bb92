"""`TFServingBackend`: a client of TensorFlow Serving (the real `tensorflow_model_server`, or the project's
runtime of its API), over gRPC (`PredictionService`, `ModelService`) or its REST API (`/v1/models/...`).

The adapter is thin: the codecs in `gateway.codecs.tfserving` turn messages into the gateway's types,
`grpc_client` / `http_client` hold the connections and map failures to `GatewayError`s. What is TF
Serving's own here:
- the route's options (`TFServingRouteOptions`) pick the signature, a version or a label, and the
  outputs asked for when the client names none (`predict.Target`);
- OIP metadata is the route's signature, read with GetModelMetadata;
- model readiness is GetModelStatus (some version, or the one asked for, AVAILABLE); TF Serving has no
  server-health call, so an endpoint is ready when it answers a ModelService call at all;
- it declares no batching (TF Serving does not say), so the derived config has max_batch_size 0;
- its REST answers carry no datatypes: that transport decodes them with the model's metadata, which the
  DataPlane hands it from its cache (`needs_metadata`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar
from urllib.parse import quote

import grpc
import httpx
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from gateway.backends.base import readable
from gateway.backends.grpc_client import map_grpc_errors, open_channel
from gateway.backends.http_client import json_object, pooled_client, send, status_error
from gateway.codecs.tfserving import rest as restcodec
from gateway.codecs.tfserving.predict import (
    NO_TARGET,
    Target,
    fill_model_spec,
    predict_request,
    response_from_predict,
    spec_version,
)
from gateway.codecs.tfserving.signature import (
    SIGNATURE_DEF_FIELD,
    metadata_from_response,
    metadata_from_signatures,
    ready_from_status,
    spec_number,
)
from gateway.errors import BackendError, GatewayError, InvalidRequest, ModelNotFound
from gateway.proto.tfserving.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from gateway.settings import NO_OPTIONS, RouteOptions, TFServingBackendSettings, TFServingRouteOptions
from gateway.types import NO_BATCHING, Batching, InferenceRequest, InferenceResponse, ModelMetadata

log = logging.getLogger(__name__)

_PREDICT: Final = "/tensorflow.serving.PredictionService/Predict"
_GET_METADATA: Final = "/tensorflow.serving.PredictionService/GetModelMetadata"
_GET_STATUS: Final = "/tensorflow.serving.ModelService/GetModelStatus"

M = TypeVar("M", bound=Message)


@functools.cache
def target_of(options: RouteOptions) -> Target:
    """The codec's view of a route's options (a route of another kind has none). Cached: options are
    frozen and hashable, and a configuration has few routes, so each is converted once, not per call."""
    if not isinstance(options, TFServingRouteOptions):
        return NO_TARGET
    return Target(options.signature_name, options.version_label, options.version, options.outputs)


def _parse(kind: type[M], data: bytes) -> M:
    try:
        return kind.FromString(data)
    except DecodeError:
        raise BackendError(f"answered with bytes that are not a {kind.__name__}") from None


class _Transport(Protocol):
    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        target: Target,
        metadata: ModelMetadata | None,
    ) -> InferenceResponse: ...
    async def model_metadata(
        self, name: str, version: str, endpoint: str, target: Target
    ) -> ModelMetadata: ...
    async def model_ready(self, name: str, version: str, endpoint: str, target: Target) -> bool: ...
    async def ready(self, endpoint: str) -> bool: ...
    async def close(self) -> None: ...


class TFServingBackend:
    """A TF Serving backend (implements `gateway.backends.base.Backend`).

    Create it inside the running event loop: the gRPC channels bind to it.

    Args:
        name: The backend's configured name (error messages).
        settings: Its settings; `protocol` picks gRPC or REST.
        http_transport: REST only: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        name: str,
        settings: TFServingBackendSettings,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._transport: _Transport
        if settings.protocol == "grpc":
            self._transport = _GrpcTransport(name, settings)
            self.needs_metadata = False
        else:
            self._transport = _RestTransport(name, settings, http_transport)
            self.needs_metadata = True

    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        *,
        options: RouteOptions = NO_OPTIONS,
        metadata: ModelMetadata | None = None,
    ) -> InferenceResponse:
        """Run one Predict on `endpoint` with an upstream deadline of `timeout_s`."""
        return await self._transport.infer(request, endpoint, timeout_s, target_of(options), metadata)

    async def model_metadata(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> ModelMetadata:
        """The route's signature as OIP metadata."""
        return await self._transport.model_metadata(name, version, endpoint, target_of(options))

    async def batching(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> Batching:
        """TF Serving does not say how it batches (its batching parameters are a server flag)."""
        return NO_BATCHING

    async def model_ready(
        self, name: str, version: str, endpoint: str, *, options: RouteOptions = NO_OPTIONS
    ) -> bool:
        """Whether GetModelStatus shows the version (or the route's label, or any) AVAILABLE."""
        return await self._transport.model_ready(name, version, endpoint, target_of(options))

    async def ready(self, endpoint: str) -> bool:
        """Whether `endpoint` answers at all; False when it cannot be reached."""
        return await self._transport.ready(endpoint)

    async def close(self) -> None:
        """Close all connections."""
        await self._transport.close()


def _spec(name: str, version: str, target: Target) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec()
    fill_model_spec(spec, name, version, target)
    return spec


class _GrpcTransport:
    """TF Serving over gRPC: one persistent channel per endpoint, calls on bytes parsed here."""

    def __init__(self, name: str, settings: TFServingBackendSettings) -> None:
        self._name = name
        self._timeout_s = settings.timeout_s
        self._probe_timeout_s = settings.health_check_timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._calls: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        for endpoint in settings.endpoints:
            channel = open_channel(endpoint, settings.max_message_bytes)
            self._channels[endpoint] = channel
            for method in (_PREDICT, _GET_METADATA, _GET_STATUS):
                self._calls[endpoint, method] = channel.unary_unary(method)

    async def _call(self, endpoint: str, method: str, message: Message, timeout_s: float) -> bytes:
        with map_grpc_errors(self._name):
            reply: bytes = await self._calls[endpoint, method](message.SerializeToString(), timeout=timeout_s)
        return reply

    def _decode(self, decode: Callable[[], Any]) -> Any:
        try:
            return decode()
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        target: Target,
        metadata: ModelMetadata | None,
    ) -> InferenceResponse:
        message = predict_request(request, target)
        reply = await self._call(endpoint, _PREDICT, message, timeout_s)
        result: InferenceResponse = self._decode(
            lambda: response_from_predict(_parse(predict_pb2.PredictResponse, reply), request)
        )
        return result

    async def model_metadata(self, name: str, version: str, endpoint: str, target: Target) -> ModelMetadata:
        message = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=_spec(name, version, target), metadata_field=[SIGNATURE_DEF_FIELD]
        )
        reply = await self._call(endpoint, _GET_METADATA, message, self._timeout_s)
        metadata: ModelMetadata = self._decode(
            lambda: metadata_from_response(
                _parse(get_model_metadata_pb2.GetModelMetadataResponse, reply), target.signature_name
            )
        )
        return metadata

    async def model_ready(self, name: str, version: str, endpoint: str, target: Target) -> bool:
        spec = _spec(name, version, target)
        message = get_model_status_pb2.GetModelStatusRequest(model_spec=spec)
        reply = await self._call(endpoint, _GET_STATUS, message, self._timeout_s)
        status = self._decode(lambda: _parse(get_model_status_pb2.GetModelStatusResponse, reply))
        return ready_from_status(status, spec_number(spec))

    async def ready(self, endpoint: str) -> bool:
        # TF Serving has no health call: any answer of its ModelService (for a model with no name,
        # refused at once) shows the server is up and serving calls.
        probe = get_model_status_pb2.GetModelStatusRequest().SerializeToString()
        try:
            await self._calls[endpoint, _GET_STATUS](probe, timeout=self._probe_timeout_s)
        except grpc.aio.AioRpcError as exc:
            return exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return True

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class _RestTransport:
    """TF Serving's REST API on one pooled httpx client; answers decoded with the model's metadata."""

    def __init__(
        self, name: str, settings: TFServingBackendSettings, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._name = name
        self._timeout_s = settings.timeout_s
        self._probe_timeout_s = settings.health_check_timeout_s
        self._client = pooled_client(settings.timeout_s, transport)

    @staticmethod
    def _url(endpoint: str, spec: model_pb2.ModelSpec, suffix: str = "") -> str:
        url = f"http://{endpoint}/v1/models/{quote(spec.name, safe='')}"
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            url += f"/versions/{spec.version.value}"
        elif choice == "version_label":
            url += f"/labels/{spec.version_label}"
        return url + suffix

    async def _send(self, method: str, url: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
        return await send(self._client, self._name, method, url, timeout_s, **kwargs)

    def _json(self, reply: httpx.Response) -> dict[str, Any]:
        return json_object(self._name, reply, _error_message)

    def _proto(self, kind: type[M], doc: Any) -> M:
        try:
            return json_format.ParseDict(doc, kind(), ignore_unknown_fields=True)
        except json_format.ParseError:
            raise BackendError(
                f"backend '{self._name}' answered with an unreadable {kind.__name__}"
            ) from None

    async def infer(
        self,
        request: InferenceRequest,
        endpoint: str,
        timeout_s: float,
        target: Target,
        metadata: ModelMetadata | None,
    ) -> InferenceResponse:
        if metadata is None:
            raise BackendError(f"backend '{self._name}': no metadata to decode its REST answers with")
        spec = _spec(request.model_name, request.model_version, target)
        body = restcodec.encode_predict_request(request, target.signature_name)
        headers = {"content-type": "application/json"}
        url = self._url(endpoint, spec, ":predict")
        reply = await self._send("POST", url, timeout_s, content=body, headers=headers)
        if reply.status_code != 200:
            raise status_error(self._name, reply, _error_message)
        requested = [o.name for o in request.outputs] if request.outputs else list(target.outputs) or None
        try:
            outputs = restcodec.decode_predict_response(reply.content, metadata.outputs, requested)
        except (BackendError, InvalidRequest) as exc:
            raise readable(self._name, exc) from None
        version = spec_version(spec) or request.model_version
        return InferenceResponse(request.model_name, outputs, model_version=version, id=request.id)

    async def model_metadata(self, name: str, version: str, endpoint: str, target: Target) -> ModelMetadata:
        spec = _spec(name, version, target)
        doc = self._json(await self._send("GET", self._url(endpoint, spec, "/metadata"), self._timeout_s))
        # TF Serving writes the Any of GetModelMetadataResponse as the bare SignatureDefMap, without
        # "@type": so the map is read from its place rather than the whole answer parsed as the message.
        metadata, served = doc.get("metadata"), doc.get("model_spec", {})
        packed = metadata.get(SIGNATURE_DEF_FIELD) if isinstance(metadata, dict) else None
        if not isinstance(packed, dict) or not isinstance(served, dict):
            raise BackendError(f"backend '{self._name}' answered metadata without a signature_def map")
        signatures = self._proto(get_model_metadata_pb2.SignatureDefMap, packed)
        served_spec = self._proto(model_pb2.ModelSpec, served)
        try:
            return metadata_from_signatures(name, spec_number(served_spec), signatures, target.signature_name)
        except BackendError as exc:
            raise readable(self._name, exc) from None

    async def model_ready(self, name: str, version: str, endpoint: str, target: Target) -> bool:
        spec = _spec(name, version, target)
        reply = await self._send("GET", self._url(endpoint, spec), self._timeout_s)
        if reply.status_code == 404:
            raise ModelNotFound(name, version)
        status = self._proto(get_model_status_pb2.GetModelStatusResponse, self._json(reply))
        return ready_from_status(status, spec_number(spec))

    async def ready(self, endpoint: str) -> bool:
        # No health endpoint in TF Serving's REST API: any HTTP answer shows the server is up.
        try:
            await self._send("GET", f"http://{endpoint}/v1/models/", self._probe_timeout_s)
        except GatewayError:
            return False
        return True

    async def close(self) -> None:
        await self._client.aclose()


def _error_message(reply: httpx.Response) -> str | None:
    """The message of TF Serving's `{"error": ...}` body, or None when the body is not one."""
    return restcodec.error_message(reply.content)

"""gRPC listener: `tensorflow.serving.PredictionService` and `ModelService` over the official stubs.

Thin: decode the request into `service` terms, call the core, encode; every error leaves through
`_abort` with TF Serving's code. Classify, Regress and MultiInference need tf.Example signatures this
runtime does not serve: UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from gateway.api.deadline import deadline_from
from gateway.api.grpc.servicer import grpc_details, status_for
from gateway.errors import ConfigError, ErrorCode, GatewayError, InvalidRequest, clip
from runtimes.tfserving import tensors
from runtimes.tfserving.config import models_from_proto
from runtimes.tfserving.service import (
    Target,
    TFServingCore,
    error_code_name,
    gateway_error,
    metadata_response,
    model_spec,
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
# grpcio's default message limits are 4 MiB; TF Serving's server takes up to INT32_MAX. Replies may be
# that large here too; requests are held to the core's `max_request_bytes`.
MAX_MESSAGE_BYTES: Final = 2**31 - 1


def _target(spec: Any) -> Target:
    choice = spec.WhichOneof("version_choice")
    return Target(
        model=spec.name,
        version=spec.version.value if choice == "version" else None,
        label=spec.version_label if choice == "version_label" else "",
        signature=spec.signature_name,
    )


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    error = gateway_error(exc)
    if error is not exc:
        _log.error("request failed", exc_info=exc)
    await context.abort(status_for(error.code), grpc_details(error.message))
    raise AssertionError("unreachable: abort raises")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, core: TFServingCore, *, as_tensor_content: bool = False) -> None:
        self._core = core
        self._as_content = as_tensor_content

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        target = _target(request.model_spec)
        return await self._timed(target.model, "Predict", context, self._predict(request, target, context))

    async def _predict(
        self, request: predict_pb2.PredictRequest, target: Target, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        limit = self._core.max_request_bytes
        inputs = {
            name: tensors.to_ndarray(proto, name, max_bytes=limit) for name, proto in request.inputs.items()
        }
        deadline = deadline_from({}, context.time_remaining())
        prediction = await self._core.predict(target, inputs, list(request.output_filter), deadline)
        response = predict_pb2.PredictResponse(
            model_spec=model_spec(prediction.version, prediction.signature.key)
        )
        for name, array in prediction.outputs.items():
            tensors.fill_proto(response.outputs[name], array, as_content=self._as_content)
        return response

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        target = _target(request.model_spec)

        async def metadata() -> get_model_metadata_pb2.GetModelMetadataResponse:
            return metadata_response(self._core.metadata(target, list(request.metadata_field)))

        return await self._timed(target.model, "GetModelMetadata", context, metadata())

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context, unimplemented("Classify"))

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context, unimplemented("Regress"))

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context, unimplemented("MultiInference"))

    async def _timed(
        self, model: str, api: str, context: grpc.aio.ServicerContext, work: Awaitable[_T]
    ) -> _T:
        start = time.perf_counter()
        status = "OK"
        try:
            return await work
        except asyncio.CancelledError:  # the client went away (a BaseException: `Exception` misses it)
            status = "CANCELLED"
            raise
        except Exception as exc:
            status = error_code_name(gateway_error(exc).code)
            await _abort(context, exc)
        finally:
            label = self._core.model_label(model)
            self._core.metrics.request(label, api, "GRPC", status, time.perf_counter() - start)


def unimplemented(api: str) -> GatewayError:
    return GatewayError(
        f"{api} is not implemented by this runtime (it serves Predict signatures only)",
        code=ErrorCode.UNIMPLEMENTED,
    )


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, core: TFServingCore) -> None:
        self._core = core

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        try:
            return status_response(self._core, _target(request.model_spec))
        except Exception as exc:
            await _abort(context, exc)

    async def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Replaces the model list with the request's (models not in it are unloaded)."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            config = request.config
            if config.WhichOneof("config") != "model_config_list":
                raise InvalidRequest("ReloadConfigRequest must carry a model_config_list")
            models = models_from_proto(config, source="ReloadConfigRequest", base_dir=Path.cwd())
            await self._core.manager.apply(models)
        except ConfigError as exc:
            response.status.error_code = ErrorCode.INVALID_ARGUMENT.grpc_code
            response.status.error_message = clip(str(exc), 1024)
            return response
        except Exception as exc:
            await _abort(context, exc)
        return response


def status_response(core: TFServingCore, target: Target) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus's answer (the REST status body is its JSON)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for record in core.manager.statuses(target.model, target.version, target.label):
        entry = response.model_version_status.add(version=record.version, state=record.state)
        entry.status.SetInParent()  # an OK status is written out too, as TF Serving does
        if record.error:
            entry.status.error_code = ErrorCode.UNKNOWN.grpc_code
            entry.status.error_message = record.error
    return response


async def start_grpc_server(
    core: TFServingCore, host: str, port: int, *, as_tensor_content: bool
) -> tuple[grpc.aio.Server, int]:
    """Starts the listener; returns it and the port it bound (port 0: one the OS chose)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", core.max_request_bytes),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(core, as_tensor_content=as_tensor_content), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    await server.start()
    return server, bound

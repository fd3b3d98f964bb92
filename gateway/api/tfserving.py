"""The TF Serving front's model status and metadata calls, shared by its REST and gRPC listeners.

Each asks the `InferenceServer` what OIP knows (readiness, metadata) and builds TF Serving's answer with
`gateway.codecs.tfserving.front`; the listeners only decode the request and encode this answer.
"""

from __future__ import annotations

from gateway.codecs.tfserving.front import metadata_response, served_versions, status_response
from gateway.errors import ErrorCode, GatewayError
from gateway.proto.tfserving.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from gateway.server import InferenceServer


async def model_status(
    server: InferenceServer, model: str, version: str
) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus of `model` at `version` ("" for any, a number, or a label).

    Raises:
        ModelNotFound: No route takes the model.
    """
    ready = await server.model_ready(model, version)
    try:
        listed = (await server.model_metadata(model, version)).versions
    except GatewayError as exc:
        # A model that is not ready may not answer metadata either: its status is still the answer.
        if ready or exc.code is ErrorCode.NOT_FOUND:
            raise
        listed = []
    return status_response(model, served_versions(listed, version), ready)


async def model_metadata(
    server: InferenceServer, model: str, version: str
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata of `model` at `version`: its `serving_default` signature.

    Raises:
        GatewayError: As `InferenceServer.model_metadata` raises.
    """
    return metadata_response(model, await server.model_metadata(model, version), version)

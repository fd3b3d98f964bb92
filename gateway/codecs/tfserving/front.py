"""What the gateway's TF Serving front answers about a model, built from OIP readiness and metadata.

A TF Serving client asks GetModelStatus and GetModelMetadata of any model the gateway routes, whatever
its backend speaks; these build TF Serving's answers (shared by the REST and gRPC fronts) from what the
`InferenceServer` knows. The gateway exposes one signature per model, `serving_default`: the route's,
described by the model's OIP metadata.

Versions: TF Serving's are int64 numbers. A model whose metadata names no numeric version is reported
as version 0 (proto3's "unset"), the only number that claims nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gateway.codecs.tfserving.predict import is_version_number
from gateway.codecs.tfserving.signature import DEFAULT_SIGNATURE, SIGNATURE_DEF_FIELD, signature_from_metadata
from gateway.errors import ErrorCode, GatewayError, InvalidRequest, clip
from gateway.proto.tfserving.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from gateway.proto.tfserving.xla.tsl.protobuf import error_codes_pb2
from gateway.types import ModelMetadata

_STATE = get_model_status_pb2.ModelVersionStatus
# A model the gateway cannot serve right now: TF Serving has no state for "its server is down", so the
# state claims nothing (UNKNOWN) and the status says why, with the code the gateway would answer.
_NOT_READY_CODE: Final = error_codes_pb2.UNAVAILABLE


def check_signature(name: str) -> str:
    """The signature a request may name: "" or `serving_default` (both are the route's); TF Serving's
    error for any other.

    Raises:
        GatewayError: FAILED_PRECONDITION, as TF Serving answers for a signature the model lacks.
    """
    if name in ("", DEFAULT_SIGNATURE):
        return DEFAULT_SIGNATURE
    raise GatewayError(f'Serving signature key "{clip(name)}" not found.', code=ErrorCode.FAILED_PRECONDITION)


def check_metadata_fields(fields: Sequence[str]) -> None:
    """GetModelMetadata's `metadata_field` must ask for `signature_def`, the only field TF Serving serves.

    Raises:
        InvalidRequest: No field, or another one, is asked for (TF Serving's INVALID_ARGUMENT).
    """
    if not fields:
        raise InvalidRequest("GetModelMetadataRequest must specify at least one metadata_field")
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise InvalidRequest(f"Metadata field {clip(field)} is not supported")


def served_versions(listed: Sequence[str], version: str) -> list[int]:
    """The version numbers a status or metadata answer reports: the one asked for when it is a number,
    else the numeric ones the model's metadata lists (`listed`: a label resolves to those), else [0]."""
    if is_version_number(version):
        return [int(version)]
    numbers = sorted({int(v) for v in listed if is_version_number(v)})
    return numbers or [0]


def status_response(
    model: str, versions: Sequence[int], ready: bool
) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus's answer: each version AVAILABLE when the model is ready, else UNKNOWN with an
    UNAVAILABLE status saying so."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for number in versions:
        entry = response.model_version_status.add()
        entry.version = number
        entry.status.SetInParent()  # TF Serving always sends it, `"error_code": "OK"` included
        if ready:
            entry.state = _STATE.AVAILABLE
        else:
            entry.state = _STATE.UNKNOWN
            entry.status.error_code = _NOT_READY_CODE
            entry.status.error_message = f"model '{clip(model)}' is not ready"
    return response


def metadata_response(
    model: str, metadata: ModelMetadata, version: str
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata's answer: the `serving_default` signature describing the model's OIP metadata,
    under `model_spec` naming the model as the client did and the (latest) version served."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model
    number = served_versions(metadata.versions, version)[-1]
    if number:
        response.model_spec.version.value = number
    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def[DEFAULT_SIGNATURE].CopyFrom(signature_from_metadata(metadata))
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
    return response

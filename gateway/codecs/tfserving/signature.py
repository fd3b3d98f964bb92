"""A TF Serving signature (`SignatureDef`) <-> OIP model metadata, and model status <-> readiness.

A SavedModel's signature names its inputs and outputs by alias (the keys of `inputs` / `outputs`, which
Predict uses), each with a dtype and a shape in which -1 is an unknown dimension: exactly what OIP model
metadata says, so the conversion is lossless both ways except for what OIP cannot express:
- a tensor of unknown rank is described with the shape [-1] (validation then expects rank 1: rare in
  practice, since exported signatures carry their rank);
- OIP metadata carries no signature name: a model has one set of inputs, the route's signature.
"""

from __future__ import annotations

from typing import Any, Final

from gateway.codecs.tfserving.tensor_proto import DATATYPE_TO_DTYPE, datatype_of
from gateway.errors import BackendError, InvalidRequest, clip
from gateway.proto.tfserving.tensorflow.core.protobuf import meta_graph_pb2
from gateway.proto.tfserving.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from gateway.types import ModelMetadata, TensorMetadata

DEFAULT_SIGNATURE: Final = "serving_default"
PREDICT_METHOD: Final = "tensorflow/serving/predict"
# The only metadata field TF Serving serves (GetModelMetadataRequest.metadata_field).
SIGNATURE_DEF_FIELD: Final = "signature_def"
# The platform OIP metadata names for a TF SavedModel (Triton's name for it).
PLATFORM: Final = "tensorflow_savedmodel"
AVAILABLE: Final = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def _tensors(infos: Any, role: str) -> list[TensorMetadata]:
    tensors = []
    for alias in sorted(infos):
        info = infos[alias]
        try:
            datatype = datatype_of(info.dtype, alias, role=role)
        except InvalidRequest as exc:
            raise BackendError(f"signature {exc.message}") from None
        shape = (-1,) if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
        tensors.append(TensorMetadata(alias, datatype, shape))
    return tensors


def metadata_from_signature(name: str, version: str, signature: meta_graph_pb2.SignatureDef) -> ModelMetadata:
    """OIP metadata of one signature of a model version."""
    return ModelMetadata(
        name=name,
        platform=PLATFORM,
        inputs=_tensors(signature.inputs, "input"),
        outputs=_tensors(signature.outputs, "output"),
        versions=[version] if version else [],
    )


def metadata_from_response(
    response: get_model_metadata_pb2.GetModelMetadataResponse, signature_name: str
) -> ModelMetadata:
    """OIP metadata from a GetModelMetadata answer, for the signature `signature_name`.

    Raises:
        BackendError: The answer holds no SignatureDefMap, or not the signature asked for.
    """
    packed = response.metadata.get(SIGNATURE_DEF_FIELD)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    if packed is None or not packed.Unpack(signatures):
        raise BackendError("answered GetModelMetadata without a SignatureDefMap")
    spec = response.model_spec
    return metadata_from_signatures(spec.name, spec_number(spec), signatures, signature_name)


def spec_number(spec: Any) -> str:
    """The version number a `ModelSpec` names, as the gateway's version string; "" when it names none
    (a label, or no version)."""
    return str(spec.version.value) if spec.HasField("version") else ""


def metadata_from_signatures(
    name: str, version: str, signatures: get_model_metadata_pb2.SignatureDefMap, signature_name: str
) -> ModelMetadata:
    """OIP metadata of the signature `signature_name` ("" for the default) of a SignatureDefMap.

    Raises:
        BackendError: The map has no such signature (the message lists those it has).
    """
    wanted = signature_name or DEFAULT_SIGNATURE
    if wanted not in signatures.signature_def:
        known = ", ".join(sorted(signatures.signature_def)) or "none"
        raise BackendError(f"model has no signature '{clip(wanted)}' (signatures: {clip(known)})")
    return metadata_from_signature(name, version, signatures.signature_def[wanted])


def signature_from_metadata(metadata: ModelMetadata) -> meta_graph_pb2.SignatureDef:
    """The Predict signature describing a model's OIP metadata (for TF Serving clients of any model).

    Tensor names in the graph are not the gateway's to know; each TensorInfo is named after its alias.
    """
    signature = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    for tensors, target in ((metadata.inputs, signature.inputs), (metadata.outputs, signature.outputs)):
        for tensor in tensors:
            info = target[tensor.name]
            info.name = tensor.name
            info.dtype = DATATYPE_TO_DTYPE[tensor.datatype]  # type: ignore[assignment]
            for size in tensor.shape:
                info.tensor_shape.dim.add().size = size
    return signature


def ready_from_status(response: get_model_status_pb2.GetModelStatusResponse, version: str) -> bool:
    """Whether a GetModelStatus answer shows the version (any version, when "") AVAILABLE."""
    return any(
        status.state == AVAILABLE and (not version or str(status.version) == version)
        for status in response.model_version_status
    )

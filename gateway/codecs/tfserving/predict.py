"""TF Serving's gRPC Predict messages <-> the gateway's `InferenceRequest` / `InferenceResponse`.

Both directions are here: toward a TF Serving backend (`predict_request`, `response_from_predict`) and
for TF Serving clients of the gateway's own front (`request_from_predict`, `predict_response`).

Versions: TF Serving's are integers (an `Int64Value`) or a label (`version_label`). The gateway's are
strings, so a label travels as the version string itself (`labels/stable` is version "stable"), which
a route can pin and map to the backend's label (`version_label` route option).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.codecs.tfserving.signature import DEFAULT_SIGNATURE, spec_number
from gateway.codecs.tfserving.tensor_proto import tensor_from_proto, tensor_to_proto
from gateway.errors import BackendError, InvalidRequest, clip
from gateway.proto.tfserving.tensorflow_serving.apis import model_pb2, predict_pb2
from gateway.types import InferenceRequest, InferenceResponse, RequestedOutput, Tensor

# TF Serving's versions are int64s.
_MAX_VERSION: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes on a TF Serving server, beyond the model name (from the route's options).

    Attributes:
        signature_name: The signature; "" for the server's default ("serving_default").
        version_label: A label to send instead of the request's version ("" for none).
        version: A version to send instead of the request's (0 for none).
        outputs: The outputs to ask for when the client names none (empty: all).
    """

    signature_name: str = ""
    version_label: str = ""
    version: int = 0
    outputs: tuple[str, ...] = ()


NO_TARGET: Final = Target()


def is_version_number(version: str) -> bool:
    """Whether a gateway version string is a TF Serving version number (ASCII digits, within int64)."""
    return version.isascii() and version.isdigit() and len(version) <= 19 and int(version) <= _MAX_VERSION


def fill_model_spec(spec: model_pb2.ModelSpec, name: str, version: str, target: Target) -> None:
    """Fill a ModelSpec for `name` at `version` (a number, or a label) as `target` directs.

    Raises:
        InvalidRequest: `version` is neither a number nor a TF Serving label, or a number past int64.
    """
    spec.name = name
    if target.signature_name:
        spec.signature_name = target.signature_name
    if target.version_label:
        spec.version_label = target.version_label
    elif target.version:
        spec.version.value = target.version
    elif version:
        if is_version_number(version):
            spec.version.value = int(version)
        elif version.isascii() and version.isdigit():
            raise InvalidRequest(f"version '{clip(version)}' is out of range (TF Serving versions are int64)")
        elif version.isascii() and version.replace("_", "").isalnum():
            spec.version_label = version
        else:
            raise InvalidRequest(f"version '{clip(version)}' is neither a TF Serving version nor a label")


def spec_version(spec: model_pb2.ModelSpec) -> str:
    """The gateway's version string of a ModelSpec: its number, or its label, or ""."""
    return spec.version_label if spec.WhichOneof("version_choice") == "version_label" else spec_number(spec)


def predict_request(request: InferenceRequest, target: Target = NO_TARGET) -> predict_pb2.PredictRequest:
    """The PredictRequest for a gateway request (numeric tensors as `tensor_content`: no per-element work).

    Raises:
        InvalidRequest: The version cannot be said to TF Serving.
    """
    message = predict_pb2.PredictRequest()
    fill_model_spec(message.model_spec, request.model_name, request.model_version, target)
    for tensor in request.inputs:
        tensor_to_proto(tensor, message.inputs[tensor.name])
    if request.outputs:
        message.output_filter.extend(o.name for o in request.outputs)
    elif target.outputs:
        message.output_filter.extend(target.outputs)
    return message


def response_from_predict(reply: predict_pb2.PredictResponse, request: InferenceRequest) -> InferenceResponse:
    """A gateway response from a backend's PredictResponse, outputs in the order the client asked for
    them (else by name: a protobuf map has no order).

    Raises:
        BackendError: An output the backend sent cannot be decoded, or one asked for is missing.
    """
    wanted = [o.name for o in request.outputs] if request.outputs else sorted(reply.outputs)
    outputs: list[Tensor] = []
    for name in wanted:
        if name not in reply.outputs:
            raise BackendError(f"answered without output '{clip(name)}'")
        try:
            outputs.append(tensor_from_proto(name, reply.outputs[name], role="output"))
        except InvalidRequest as exc:
            raise BackendError(exc.message) from None
    version = spec_version(reply.model_spec) if reply.HasField("model_spec") else request.model_version
    return InferenceResponse(request.model_name, outputs, model_version=version, id=request.id)


def request_from_predict(message: predict_pb2.PredictRequest) -> tuple[InferenceRequest, str]:
    """A TF Serving client's PredictRequest as a gateway request, and the signature it names.

    Raises:
        InvalidRequest: A tensor that cannot be decoded, or no model name.
    """
    spec = message.model_spec
    if not spec.name:
        raise InvalidRequest("Missing ModelSpec")
    inputs = [tensor_from_proto(name, message.inputs[name]) for name in sorted(message.inputs)]
    outputs = [RequestedOutput(name) for name in message.output_filter] or None
    request = InferenceRequest(spec.name, inputs, model_version=spec_version(spec), outputs=outputs)
    return request, spec.signature_name or DEFAULT_SIGNATURE


def predict_response(
    response: InferenceResponse, signature_name: str, *, typed: bool = True
) -> predict_pb2.PredictResponse:
    """The PredictResponse for a TF Serving client; `typed` writes the `*_val` fields, as TF Serving does
    by default (clients that read `float_val` directly exist), else `tensor_content`."""
    message = predict_pb2.PredictResponse()
    spec = message.model_spec
    spec.name = response.model_name
    if is_version_number(response.model_version):
        spec.version.value = int(response.model_version)
    spec.signature_name = signature_name
    for tensor in response.outputs:
        tensor_to_proto(tensor, message.outputs[tensor.name], typed=typed)
    return message

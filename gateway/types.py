"""Transport-neutral request and response types shared by listeners, the DataPlane, codecs and backends.

Tensor data stays a numpy array end to end: codecs build it with `np.frombuffer` from wire bytes and
backends serialise it with `tobytes`; nothing here touches elements one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gateway.errors import ErrorCode

# A request/tensor parameter value, as OIP allows (gRPC InferParameter oneof; JSON scalar).
Parameter = bool | int | float | str
Parameters = dict[str, Parameter]


@dataclass(slots=True)
class Tensor:
    """A named tensor.

    `data` has dtype `datatypes.numpy_dtype(datatype)` and shape `shape` (BYTES: object array of bytes;
    BF16: uint16 bit patterns). `parameters` carries per-tensor protocol parameters such as `binary_data`.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: Parameters = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        if self.datatype == "BYTES":
            return sum(len(b) for b in self.data.ravel())
        return int(self.data.nbytes)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """`model_version` is "" when the client did not pin one. `outputs` None means all outputs.

    `wire` is the decoded message this request came from, set by a codec that can re-encode it for the
    same protocol by reusing it (see `gateway.codecs.v2.protobuf`): forwarding then copies no tensor. Only
    the model name may change while it is set; code that changes anything else sets it to None.
    """

    model_name: str
    inputs: list[Tensor]
    model_version: str = ""
    id: str = ""
    outputs: list[RequestedOutput] | None = None
    parameters: Parameters = field(default_factory=dict)
    wire: object | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class InferenceResponse:
    """`wire`: as for `InferenceRequest`, the decoded message this response came from, if any."""

    model_name: str
    outputs: list[Tensor]
    model_version: str = ""
    id: str = ""
    parameters: Parameters = field(default_factory=dict)
    wire: object | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True, frozen=True)
class TensorMetadata:
    """Shape uses -1 for a variable dimension (the batch dimension included)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(slots=True)
class ModelMetadata:
    name: str
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    versions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ModelConfig:
    """The Triton-style model configuration served at `/v2/models/{m}/config` and by gRPC `ModelConfig`.

    With `max_batch_size > 0` the tensor dims exclude the batch dimension, as Triton's do.
    """

    name: str
    platform: str
    max_batch_size: int
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    backend: str = ""
    max_queue_delay_microseconds: int = 0
    preferred_batch_sizes: list[int] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class Batching:
    """What a backend says of a model's server-side batching: how many rows it merges into one run
    (0: it does not batch), the batch sizes it prefers and how long it holds a request for company."""

    max_batch_size: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0


NO_BATCHING = Batching()


@dataclass(slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: list[str]


@dataclass(slots=True)
class RequestContext:
    """What a listener knows about a call that the core needs: the transport and the client's deadline.

    `deadline` is an absolute `time.monotonic()` value or None; `received_at` the `time.monotonic()` at
    which the listener had the request whole, before decoding, so the gateway's own time counts the
    listener's decoding too. The DataPlane fills `model_label` / `version_label` / `framework_label`
    with the bounded metric labels it resolved.
    """

    protocol: str
    deadline: float | None = None
    received_at: float | None = None
    model_label: str = ""
    version_label: str = ""
    framework_label: str = ""

    def cancelled_code(self, now: float) -> ErrorCode:
        """What a cancelled call counts as: gRPC cancels the handler when the call's deadline passes, and
        that is DEADLINE_EXCEEDED; otherwise the client went away. `now` is a `time.monotonic()` value.
        Up to 5 ms early still counts as the deadline: gRPC's timer and ours read different clocks."""
        if self.deadline is not None and now >= self.deadline - 0.005:
            return ErrorCode.DEADLINE_EXCEEDED
        return ErrorCode.CANCELLED

"""The project's TorchServe handler: tensors in, tensors out, for any TorchScript or eager PyTorch model.

TorchServe calls `handle(requests, context)` with the requests its batcher gathered (up to the model's
`batchSize`, waiting at most `maxBatchDelay` ms). Each request body is the project's tensor payload
(`gateway.codecs.torchserve.payload`). The handler

1. decodes every request and checks it against the archive's `signature.json` (names, datatypes, the
   fixed dimensions); a request that fails gets its own 400 answer and the others go on;
2. merges the requests whose tensors agree on everything but the first dimension (all of them, normally)
   by concatenating rows, when the signature is batchable (every tensor's first dimension is -1);
3. runs the model once per merged group under `torch.inference_mode()`, inputs passed positionally in
   the signature's order;
4. splits each output's rows back to the requests and answers each with a response payload, named,
   typed and checked by the signature.

What TorchServe does with failures (0.12.0, `ts/service.py`): an exception escaping the handler fails the
whole batch, every request answered 503 `{"code":503,"type":"InternalServerException","message":
"Prediction failed"}`, with no detail. So this handler never lets one escape: it sets a status per
request (`context.set_response_status(code, phrase, index)`), which TorchServe sends as that request's
HTTP status with the body returned for it, in TorchServe's own error shape
(`payload.error_body`): 400 `InvalidRequest` for a bad payload (the message names the fault, client
strings in it clipped), 500 `ModelError` when the model raises, returns what the signature does not
describe or what cannot be encoded, or when decoding one request fails unexpectedly (the exception's
class only; its text and traceback go to the model log). Each such failure is its request's alone.

Model loading: a TorchScript file (`serializedFile` ending in `.pt`, loaded with `torch.jit.load`), or
an eager module: the archive's `eager.json` names a Python file in the archive and a factory in it that
returns the `nn.Module`; a `serializedFile` beside it is then a state dict loaded into it (weights only).
The device is the GPU TorchServe assigns the worker (`gpu_id`) when CUDA is available, else the CPU.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from gateway.codecs.torchserve.payload import (
    CONTENT_TYPE,
    encode_response,
    error_body,
    parse_request,
)
from gateway.codecs.torchserve.signature import EAGER_FILE, Signature, loads_signature
from gateway.codecs.torchserve.signature import FILENAME as SIGNATURE_FILE
from gateway.codecs.v2.tensors import fmt_shape, owner
from gateway.core.validation import shape_matches
from gateway.datatypes import NUMPY_DTYPES
from gateway.errors import GatewayError, InvalidRequest, clip
from gateway.types import Tensor, TensorMetadata

JSON_TYPE: Final = "application/json"
# The answer header that tells TorchServe whether more messages of a streamed answer follow.
_STREAM_NEXT: Final = "ts_stream_next"
_log = logging.getLogger(__name__)


class SignatureMismatch(Exception):
    """The model returned outputs that the signature does not describe."""


@dataclass(slots=True)
class _Prepared:
    """One decoded request: its inputs in the signature's order and the outputs it asked for."""

    index: int
    arrays: list[np.ndarray]
    outputs: tuple[str, ...] | None

    @property
    def rows(self) -> int:
        return int(self.arrays[0].shape[0]) if self.arrays and self.arrays[0].ndim else 1

    def key(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """What requests must share to be merged: each input's dtype and all dimensions but the first."""
        return tuple((str(a.dtype), tuple(a.shape[1:])) for a in self.arrays)


class TensorHandler:
    """Serves one model: `initialize(context)` loads it, `handle(requests, context)` answers a batch."""

    def __init__(self) -> None:
        self.model: Callable[..., Any] | None = None
        self.signature: Signature | None = None
        self.device = torch.device("cpu")
        # Fixed by the signature, so computed once when it is set (`_set_signature`), not per request.
        self._metadata_body = b""
        self._batchable = False

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            self.device = torch.device(f"cuda:{gpu_id}")
        manifest = context.manifest or {}
        serialized = manifest.get("model", {}).get("serializedFile")
        self.load(model_dir, serialized)

    def load(self, model_dir: Path, serialized: str | None) -> None:
        """Loads `signature.json` and the model from an unpacked archive directory."""
        self._set_signature(loads_signature((model_dir / SIGNATURE_FILE).read_text(), SIGNATURE_FILE))
        eager = model_dir / EAGER_FILE
        if eager.is_file():
            self.model = self._load_eager(model_dir, json.loads(eager.read_text()), serialized)
        elif serialized:
            path = str(model_dir / serialized)
            self.model = torch.jit.load(path, map_location=self.device).eval()  # type: ignore[no-untyped-call]
        else:
            raise RuntimeError(f"{model_dir}: no TorchScript file and no {EAGER_FILE}: nothing to serve")

    def use(self, model: Callable[..., Any], signature: Signature) -> None:
        """Serves `model` (an `nn.Module` or any callable on tensors) directly, without an archive."""
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        self._set_signature(signature)

    def _set_signature(self, signature: Signature) -> None:
        self.signature = signature
        self._metadata_body = signature.dumps().encode()
        self._batchable = signature.batchable

    def _load_eager(self, model_dir: Path, spec: dict[str, Any], serialized: str | None) -> Any:
        module = importlib.import_module(str(spec["module"]))  # the archive's directory is on sys.path
        model = getattr(module, str(spec["factory"]))()
        if serialized:
            path = str(model_dir / serialized)
            state = torch.load(path, map_location=self.device, weights_only=True)  # type: ignore[no-untyped-call]
            model.load_state_dict(state)
        return model.to(self.device).eval()

    # --- a batch ------------------------------------------------------------------------------------

    def handle(self, requests: Sequence[dict[str, Any]], context: Any) -> list[bytes]:
        """One answer per request, in order; failures are answered per request, never raised."""
        signature = self.signature
        assert signature is not None, "handle() before initialize()"
        answers: list[bytes] = [b""] * len(requests)
        prepared: list[_Prepared] = []
        for index, request in enumerate(requests):
            try:
                tensors, outputs, metadata = parse_request(_body(request))
                if metadata:
                    answers[index] = self._metadata_body
                    _set_type(context, index, JSON_TYPE)
                    continue
                prepared.append(_prepare(index, tensors, outputs, signature, self._batchable))
            except GatewayError as exc:
                answers[index] = _fail(context, index, 400, "InvalidRequest", exc.message)
            except RecursionError:  # JSON nested deeper than the interpreter's stack: the client's doing
                answers[index] = _fail(context, index, 400, "InvalidRequest", "payload nested too deeply")
            except Exception as exc:  # a bug of ours on this request: it alone fails, not the whole batch
                _log.exception("decoding request %d of a batch of %d failed", index, len(requests))
                message = f"the handler failed on the request ({type(exc).__name__}); see the model log"
                answers[index] = _fail(context, index, 500, "ModelError", message)
        for group in _groups(prepared, self._batchable):
            try:
                results = self._run(group, signature)
            except SignatureMismatch as exc:
                _log.error("model output does not match %s: %s", SIGNATURE_FILE, exc)
                for item in group:
                    answers[item.index] = _fail(context, item.index, 500, "ModelError", str(exc))
                continue
            except Exception as exc:  # the model's own failure: logged whole, answered opaquely
                _log.exception("model failed on a batch of %d request(s)", len(group))
                message = f"the model raised {type(exc).__name__}; see the model log"
                for item in group:
                    answers[item.index] = _fail(context, item.index, 500, "ModelError", message)
                continue
            for item, tensors_out in zip(group, results, strict=True):
                answers[item.index] = _encode(context, item.index, tensors_out)
        if context is not None:
            for index in range(len(requests)):
                _mark_whole(context, index)
        return answers

    def _run(self, group: list[_Prepared], signature: Signature) -> list[list[Tensor]]:
        """Runs the model once on the group's rows; each request's outputs, split back."""
        assert self.model is not None
        if len(group) == 1:
            arrays = group[0].arrays
        else:
            arrays = [np.concatenate(parts) for parts in zip(*(g.arrays for g in group), strict=True)]
        with torch.inference_mode():
            args = (
                _to_torch(a, m.datatype, self.device) for a, m in zip(arrays, signature.inputs, strict=True)
            )
            raw = self.model(*args)
        outputs = _outputs(raw, signature.outputs)
        bounds = np.cumsum([g.rows for g in group])[:-1]
        total = sum(g.rows for g in group)
        split: list[list[np.ndarray]] = []
        for meta, array in zip(signature.outputs, outputs, strict=True):
            _check_output(meta, array, total if self._batchable else None)
            split.append(np.split(array, bounds) if len(group) > 1 else [array])
        results = []
        for position, item in enumerate(group):
            wanted = item.outputs
            results.append(
                [
                    Tensor(meta.name, meta.datatype, tuple(parts[position].shape), parts[position])
                    for meta, parts in zip(signature.outputs, split, strict=True)
                    if wanted is None or meta.name in wanted
                ]
            )
        return results


def _encode(context: Any, index: int, tensors: list[Tensor]) -> bytes:
    """One request's response payload, or its own 500 when its outputs cannot be encoded (a BYTES
    output holding numbers, say): the rest of the batch is answered."""
    try:
        answer = encode_response(tensors)
    except Exception as exc:
        _log.exception("encoding the outputs of request %d failed", index)
        message = f"the model's outputs could not be encoded ({type(exc).__name__}); see the model log"
        return _fail(context, index, 500, "ModelError", message)
    _set_type(context, index, CONTENT_TYPE)
    return answer


def _body(request: dict[str, Any]) -> bytes | bytearray:
    """The payload of one request: a raw REST body ("body"), gRPC's `input["data"]`, or a sole field."""
    for key in ("body", "data"):
        if key in request:
            value = request[key]
            break
    else:
        if len(request) != 1:
            fields = [clip(str(name), 64) for name in sorted(request, key=str)[:8]]
            raise InvalidRequest(f"expected one field 'body' or 'data', got {fields}")
        (value,) = request.values()
    if not isinstance(value, bytes | bytearray):
        # TorchServe decodes application/json and text/* bodies itself: the payload is neither.
        raise InvalidRequest(
            f"the body arrived as {type(value).__name__}, not bytes: send Content-Type: {CONTENT_TYPE}"
        )
    return value


def _prepare(
    index: int,
    tensors: list[Tensor],
    outputs: tuple[str, ...] | None,
    signature: Signature,
    batchable: bool,
) -> _Prepared:
    """The request's inputs in the signature's order, checked against it."""
    given = {t.name: t for t in tensors}
    expected = [t.name for t in signature.inputs]
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise InvalidRequest(f"unknown {owner('input', unknown[0])}; the model takes {expected}")
    arrays = []
    rows: int | None = None
    for meta in signature.inputs:
        tensor = given.get(meta.name)
        if tensor is None:
            raise InvalidRequest(f"missing input '{meta.name}'; the model takes {expected}")
        if tensor.datatype != meta.datatype:
            raise InvalidRequest(
                f"input '{meta.name}': datatype {tensor.datatype}, the model takes {meta.datatype}"
            )
        if not shape_matches(tensor.shape, meta.shape):
            raise InvalidRequest(
                f"input '{meta.name}': shape {fmt_shape(tensor.shape)} does not match {list(meta.shape)}"
            )
        if batchable:
            if rows is not None and tensor.shape[0] != rows:
                raise InvalidRequest(
                    f"input '{meta.name}': {tensor.shape[0]} rows, the other inputs have {rows}"
                )
            rows = tensor.shape[0]
        arrays.append(tensor.data)
    if outputs is not None:
        names = [t.name for t in signature.outputs]
        missing = [name for name in outputs if name not in names]
        if missing:
            raise InvalidRequest(f"unknown {owner('output', missing[0])}; the model returns {names}")
    return _Prepared(index, arrays, outputs)


def _groups(prepared: list[_Prepared], batchable: bool) -> list[list[_Prepared]]:
    """Requests merged into one run: all that agree on dtypes and trailing dims, when batchable."""
    if not batchable:
        return [[item] for item in prepared]
    groups: dict[tuple[tuple[str, tuple[int, ...]], ...], list[_Prepared]] = {}
    for item in prepared:
        groups.setdefault(item.key(), []).append(item)
    return list(groups.values())


def _to_torch(array: np.ndarray, datatype: str, device: torch.device) -> Any:
    """A numpy input as the model takes it: a tensor (BF16 bit patterns reinterpreted, not converted),
    or for BYTES the numpy object array of bytes itself (torch has no string tensors; eager models only).
    """
    if datatype == "BYTES":
        return array
    if not array.flags.writeable:
        array = array.copy()  # torch.from_numpy warns on read-only memory (TorchServe's bodies are not)
    if datatype == "BF16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(array).to(device)


def _outputs(raw: Any, metas: tuple[TensorMetadata, ...]) -> list[np.ndarray]:
    """The model's return value as numpy arrays in the signature's output order."""
    if isinstance(raw, dict):
        missing = [m.name for m in metas if m.name not in raw]
        if missing:
            raise SignatureMismatch(f"the model's outputs {sorted(raw)} lack '{missing[0]}'")
        values = [raw[m.name] for m in metas]
    elif isinstance(raw, tuple | list) and not (len(metas) == 1 and metas[0].datatype == "BYTES"):
        values = list(raw)
    else:
        values = [raw]
    if len(values) != len(metas):
        raise SignatureMismatch(f"the model returned {len(values)} outputs, the signature has {len(metas)}")
    return [_to_numpy(value, meta) for value, meta in zip(values, metas, strict=True)]


def _to_numpy(value: Any, meta: TensorMetadata) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            if meta.datatype != "BF16":
                raise SignatureMismatch(f"output '{meta.name}': bfloat16, the signature says {meta.datatype}")
            bits: np.ndarray = value.view(torch.int16).numpy().view(np.uint16)
            return bits
        array: np.ndarray = value.numpy()
        return array
    if meta.datatype == "BYTES":
        if isinstance(value, list):  # a list of str/bytes per row: np.asarray would make a str array
            items = np.empty(len(value), dtype=object)
            items[:] = [v.encode() if isinstance(v, str) else v for v in value]
            return items
        return np.asarray(value, dtype=object)
    return np.asarray(value)


def _check_output(meta: TensorMetadata, array: np.ndarray, rows: int | None) -> None:
    expected = NUMPY_DTYPES[meta.datatype]
    if meta.datatype == "BF16":
        ok = array.dtype == np.uint16
    elif meta.datatype == "BYTES":
        ok = array.dtype == object
    else:
        ok = array.dtype == expected
    if not ok:
        raise SignatureMismatch(
            f"output '{meta.name}': dtype {array.dtype}, the signature says {meta.datatype}"
        )
    if not shape_matches(array.shape, meta.shape):
        raise SignatureMismatch(
            f"output '{meta.name}': shape {list(array.shape)} does not match {list(meta.shape)}"
        )
    if rows is not None and array.shape[0] != rows:
        raise SignatureMismatch(f"output '{meta.name}': {array.shape[0]} rows for {rows} input rows")


def _fail(context: Any, index: int, code: int, kind: str, message: str) -> bytes:
    if context is not None:
        context.set_response_status(code, kind, index)
        _set_type(context, index, JSON_TYPE)
    return error_body(code, kind, message)


def _mark_whole(context: Any, index: int) -> None:
    """Mark a gRPC request's answer the last (and only) message of its stream.

    TorchServe 0.12.0's frontend reads the `ts_stream_next` header of every answer to a gRPC
    StreamPredictions call, and without it fails the worker (a NullPointerException, "Worker died.", the
    model reloaded); Predictions ignores it. Over REST the header would turn the answer into a chunked
    stream that never ends, so it is set only where the request did not come over HTTP: gRPC requests
    carry only their inputs as properties, HTTP ones their headers and TorchServe's `url_path` (checked
    with 0.12.0).
    """
    properties = context.get_all_request_header(index) or {}
    if "url_path" not in properties and "Host" not in properties and "host" not in properties:
        context.set_response_header(index, _STREAM_NEXT, "false")


def _set_type(context: Any, index: int, content_type: str) -> None:
    if context is not None:
        context.set_response_content_type(index, content_type)


_SERVICE = TensorHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """TorchServe's function entry point: `handle(None, context)` loads the model, then serves batches."""
    if data is None:
        if _SERVICE.model is None:
            _SERVICE.initialize(context)
        return None
    return _SERVICE.handle(data, context)

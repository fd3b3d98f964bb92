"""The gRPC servicer in-process (fake model, fake call context): codes, limits and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from runtimes.tfserving import tensors
from runtimes.tfserving.grpc_api import PredictionServicer
from runtimes.tfserving.service import TFServingCore
from tests.unit.runtime_tfserving.fakes import FakeModel, fake_core


class Aborted(Exception):
    """What FakeContext.abort raises, as grpc.aio's abort raises to end the call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class FakeContext:
    """The parts of `grpc.aio.ServicerContext` the servicer uses."""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Aborted(code, details)


@pytest.fixture
async def model() -> AsyncIterator[FakeModel]:
    fake = FakeModel()
    yield fake
    fake.gate.set()


@pytest.fixture
async def core(tmp_path: Path, model: FakeModel) -> AsyncIterator[TFServingCore]:
    served = await fake_core(tmp_path, model, max_request_bytes=4096)
    yield served
    await served.manager.close()
    served.close()


def request(signature: str = "", model: str = "m", **inputs: np.ndarray) -> predict_pb2.PredictRequest:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    message.model_spec.signature_name = signature
    for name, array in inputs.items():
        message.inputs[name].CopyFrom(tensors.to_proto(array))
    return message


async def call(core: TFServingCore, message: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    return await PredictionServicer(core).Predict(message, FakeContext())


def metrics(core: TFServingCore) -> str:
    return core.metrics.exposition().decode()


async def test_predict_answers_typed_fields(core: TFServingCore) -> None:
    """A Predict call runs the signature and answers its outputs."""
    response = await call(core, request(x=np.array([[1, 2]], np.float32)))
    np.testing.assert_array_equal(tensors.to_ndarray(response.outputs["y"]), [3.0])
    assert 'request_count{model_name="m",status="OK"} 1.0' in metrics(core)


async def test_unknown_signature_is_failed_precondition(core: TFServingCore) -> None:
    """TF Serving's code and message for a signature key the model lacks."""
    with pytest.raises(Aborted) as err:
        await call(core, request("nope", x=np.zeros((1, 2), np.float32)))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details == 'Serving signature key "nope" not found.'


async def test_input_names_in_messages_are_clipped(core: TFServingCore) -> None:
    """Input names are the client's: the mismatch message quotes them clipped, however many or long."""
    inputs = {f"{i}" + "z" * 3000: np.zeros(1, np.float32) for i in range(40)}
    with pytest.raises(Aborted) as err:
        await call(core, request(**inputs))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(err.value.details) < 3000 and "40 in all" in err.value.details


async def test_typed_value_cannot_broadcast_past_the_request_limit(core: TFServingCore) -> None:
    """One float_val value declaring a shape of more bytes than max_request_bytes is refused up front."""
    message = request("floats")
    proto = message.inputs["x"]
    proto.dtype = types_pb2.DT_FLOAT
    proto.tensor_shape.dim.add(size=2000)  # 8000 bytes of float32 from 4 sent: over the 4096 limit
    proto.float_val.append(1.0)
    with pytest.raises(Aborted) as err:
        await call(core, message)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x'" in err.value.details and "4096-byte limit" in err.value.details


async def test_unknown_models_share_one_metric_label(core: TFServingCore) -> None:
    """ModelSpec names label metrics only when served: others are counted as `_unknown`."""
    with pytest.raises(Aborted) as err:
        await call(core, request(model="nope", x=np.zeros((1, 2), np.float32)))
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    text = metrics(core)
    assert "nope" not in text
    assert 'request_count{model_name="_unknown",status="NOT_FOUND"} 1.0' in text


async def test_cancelled_call_is_counted_cancelled(core: TFServingCore, model: FakeModel) -> None:
    """A call cancelled while the model runs (CancelledError, a BaseException) is CANCELLED, not OK."""
    task = asyncio.create_task(call(core, request("slow", x=np.zeros(1, np.float32))))
    assert await asyncio.to_thread(model.started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    text = metrics(core)
    assert 'request_count{model_name="m",status="CANCELLED"} 1.0' in text
    assert 'status="OK"' not in text

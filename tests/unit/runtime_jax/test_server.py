"""`JaxInferenceServer`: the Open Inference Protocol over compiled example models."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from gateway.errors import DeadlineExceeded, InvalidRequest, ModelNotFound
from gateway.server import InferenceServer
from gateway.types import InferenceRequest, RequestContext, RequestedOutput, Tensor
from runtimes.jax import export
from runtimes.jax.compiled import CompiledModel, make_loader
from runtimes.jax.manager import ModelManager
from runtimes.jax.metrics import RuntimeMetrics
from runtimes.jax.server import JaxInferenceServer
from tests.unit.runtime_common.fakes import rows, started
from tests.unit.runtime_jax.fakes import FakeLoader, fake_config, make_version


@pytest.fixture
async def server(example_repo: Path, shared_loader: Any) -> AsyncIterator[JaxInferenceServer]:
    metrics = RuntimeMetrics()
    manager = ModelManager(example_repo, shared_loader, poll_interval_s=0, metrics=metrics)
    await manager.start()
    yield JaxInferenceServer(manager, metrics)
    await manager.close()


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 28, 28, 1), dtype=np.float32)


def cnn_request(x: np.ndarray, **kwargs: Any) -> InferenceRequest:
    return InferenceRequest("cnn", [Tensor("image", "FP32", x.shape, x)], **kwargs)


def ctx() -> RequestContext:
    return RequestContext(protocol="test")


def sample(server: JaxInferenceServer, name: str, labels: dict[str, str]) -> float:
    value = server._metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_server_implements_the_listener_protocol(server: JaxInferenceServer) -> None:
    """JaxInferenceServer is an InferenceServer, so the gateway's listeners can serve it."""
    listener_view: InferenceServer = server
    assert listener_view is server


async def test_server_and_model_metadata(server: JaxInferenceServer) -> None:
    """Metadata: server name and extensions; model platform, -1 batch shapes, served versions."""
    meta = await server.server_metadata()
    assert meta.name == "jax-runtime" and meta.extensions == ["binary_tensor_data", "model_configuration"]
    assert await server.live() and await server.ready()
    model = await server.model_metadata("cnn")
    assert model.platform == "jax_xla" and model.versions == ["1"]
    assert [(t.name, t.datatype, t.shape) for t in model.inputs] == [("image", "FP32", (-1, 28, 28, 1))]
    assert [(t.name, t.datatype, t.shape) for t in model.outputs] == [("probabilities", "FP32", (-1, 10))]


async def test_model_config_is_triton_style(server: JaxInferenceServer) -> None:
    """The config lists dims without the batch dimension and the batching settings."""
    config = await server.model_config("transformer", "1")
    assert config.max_batch_size == 4 and config.platform == "jax_xla"
    assert [(t.name, t.datatype, t.shape) for t in config.inputs] == [("tokens", "INT32", (16,))]
    assert [(t.name, t.shape) for t in config.outputs] == [("embedding", (32,))]
    assert config.preferred_batch_sizes == [1, 2, 4] and config.max_queue_delay_microseconds == 2000


async def test_unknown_model_or_version_is_not_found(server: JaxInferenceServer) -> None:
    """Unknown models and versions raise ModelNotFound on every call that names them."""
    assert await server.model_ready("cnn") and await server.model_ready("cnn", "1")
    calls: list[Callable[[], Any]] = [
        lambda: server.model_ready("nope"),
        lambda: server.model_metadata("cnn", "2"),
        lambda: server.model_config("nope"),
        lambda: server.infer(InferenceRequest("nope", []), ctx()),
    ]
    for call in calls:
        with pytest.raises(ModelNotFound):
            await call()


async def test_infer_returns_model_outputs_for_each_row(
    server: JaxInferenceServer, compiled: dict[str, CompiledModel]
) -> None:
    """A 3-row request answers with 3 rows equal to the executable's, echoing id and version."""
    x = images(3)
    response = await server.infer(cnn_request(x, id="req-1"), ctx())
    (out,) = response.outputs
    assert (out.name, out.datatype, out.shape) == ("probabilities", "FP32", (3, 10))
    (want,) = compiled["cnn"].replicas[0].run([np.concatenate([x, np.zeros_like(x[:1])])])
    np.testing.assert_allclose(out.data, want[:3], rtol=1e-6)
    assert response.id == "req-1" and response.model_version == "1" and response.model_name == "cnn"


async def test_concurrent_requests_are_batched_and_answered_individually(
    server: JaxInferenceServer, compiled: dict[str, CompiledModel]
) -> None:
    """Concurrent single-row requests each get the row the model computes for their own input."""
    tokens = np.random.default_rng(3).integers(0, 128, (4, 16), dtype=np.int32)
    requests = [
        InferenceRequest("transformer", [Tensor("tokens", "INT32", (1, 16), tokens[i : i + 1])])
        for i in range(4)
    ]
    responses = await asyncio.gather(*(server.infer(r, ctx()) for r in requests))
    (want,) = compiled["transformer"].replicas[0].run([tokens])
    for i, response in enumerate(responses):
        np.testing.assert_allclose(response.outputs[0].data, want[i : i + 1], rtol=1e-5, atol=1e-6)
    assert sample(server, "jax_runtime_batch_size_count", {"model": "transformer", "version": "1"}) >= 1


async def test_requested_outputs_are_honoured(server: JaxInferenceServer) -> None:
    """Only the requested outputs come back; an unknown requested output is InvalidRequest."""
    response = await server.infer(cnn_request(images(1), outputs=[RequestedOutput("probabilities")]), ctx())
    assert [o.name for o in response.outputs] == ["probabilities"]
    with pytest.raises(InvalidRequest, match="no output 'logits'"):
        await server.infer(cnn_request(images(1), outputs=[RequestedOutput("logits")]), ctx())


def _image(**changes: Any) -> Tensor:
    x = images(1)
    tensor = Tensor("image", "FP32", x.shape, x)
    for key, value in changes.items():
        setattr(tensor, key, value)
    return tensor


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([_image(name="img")], "no input 'img'"),
        ([], "requires input 'image'"),
        ([_image(), _image()], "input 'image' is given more than once"),
        ([_image(datatype="FP64", data=images(1).astype(np.float64))], "input 'image' has datatype FP64"),
        ([_image(datatype="BYTES", data=np.array([b"x"], dtype=object))], "input 'image' has datatype BYTES"),
        ([_image(shape=(1, 28, 28, 3))], r"input 'image' has shape \[1, 28, 28, 3\]"),
        ([_image(shape=(1, 784))], r"input 'image' has shape \[1, 784\]"),
        ([_image(shape=(0, 28, 28, 1), data=np.zeros((0, 28, 28, 1), np.float32))], "batch size 0"),
        ([_image(shape=(2, 28, 28, 1))], "holds 784 elements"),
    ],
)
async def test_invalid_inputs_are_rejected_naming_the_input(
    server: JaxInferenceServer, inputs: list[Tensor], message: str
) -> None:
    """Each malformed request fails with InvalidRequest naming the input, and is counted as such."""
    with pytest.raises(InvalidRequest, match=message):
        await server.infer(InferenceRequest("cnn", inputs), ctx())
    assert sample(
        server, "jax_runtime_requests_total", {"model": "cnn", "version": "1", "code": "INVALID_ARGUMENT"}
    )


async def test_bad_request_fails_alone_among_concurrent_good_ones(server: JaxInferenceServer) -> None:
    """A malformed request sent with good ones fails by itself; the good ones are answered."""
    good = [cnn_request(images(1, seed)) for seed in range(3)]
    bad = InferenceRequest("cnn", [_image(shape=(1, 28, 28, 2))])
    results = await asyncio.gather(
        *(server.infer(r, ctx()) for r in [good[0], bad, *good[1:]]), return_exceptions=True
    )
    assert isinstance(results[1], InvalidRequest)
    assert all(r.outputs[0].shape == (1, 10) for r in [results[0], *results[2:]])  # type: ignore[union-attr]
    ok = sample(server, "jax_runtime_requests_total", {"model": "cnn", "version": "1", "code": "OK"})
    assert ok == 3


async def test_expired_deadline_fails_with_deadline_exceeded(server: JaxInferenceServer) -> None:
    """A request whose deadline has passed by the time its batch forms is not run."""
    context = RequestContext(protocol="test", deadline=time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        await server.infer(cnn_request(images(1)), context)


async def test_deadline_is_answered_while_the_request_waits_for_a_busy_device(tmp_path: Path) -> None:
    """A request queued behind a batch that runs on is answered DEADLINE_EXCEEDED at its deadline, not
    when the device frees up; the request holding the device still gets its answer."""
    gate = threading.Event()
    make_version(tmp_path, "m", 1)
    loader = FakeLoader(fake_config(max_batch_size=1, delay_ms=0), runner_gate=gate)
    metrics = RuntimeMetrics()
    manager = ModelManager(tmp_path, loader, poll_interval_s=0, metrics=metrics)
    await manager.start()
    server = JaxInferenceServer(manager, metrics)
    try:
        x = Tensor("x", "FP32", (1, 3), rows(1))
        running = asyncio.ensure_future(server.infer(InferenceRequest("m", [x]), ctx()))
        (runner,) = loader.loaded[("m", 1)][0].replicas
        await started(runner)
        context = RequestContext(protocol="test", deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceeded):
            await server.infer(InferenceRequest("m", [x]), context)
        assert not running.done()  # answered at its deadline, with the device still busy
        gate.set()
        assert (await asyncio.wait_for(running, 10)).outputs[0].data.tolist() == [[0.0, 0.0, 0.0]]
        assert (
            sample(
                server,
                "jax_runtime_requests_total",
                {"model": "m", "version": "1", "code": "DEADLINE_EXCEEDED"},
            )
            == 1
        )
    finally:
        gate.set()
        await manager.close()


async def test_transfer_bytes_counted_for_resolved_models(server: JaxInferenceServer) -> None:
    """observe_transfer adds wire bytes under the model the request resolved to, and ignores others."""
    context = ctx()
    await server.infer(cnn_request(images(1)), context)
    server.observe_transfer(context, 100, 40)
    server.observe_transfer(ctx(), 5, 5)  # never resolved: no unbounded label
    assert sample(server, "jax_runtime_transfer_bytes_total", {"model": "cnn", "direction": "in"}) == 100
    assert sample(server, "jax_runtime_transfer_bytes_total", {"model": "cnn", "direction": "out"}) == 40


async def test_rejected_requests_counted_with_bounded_model_label(server: JaxInferenceServer) -> None:
    """A listener's refusal counts under a served model's name, and under "" for any other name."""
    server.observe_rejected("cnn", ctx(), InvalidRequest("bad"))
    server.observe_rejected("no-such-model-42", ctx(), InvalidRequest("bad"))
    assert (
        sample(
            server, "jax_runtime_requests_total", {"model": "cnn", "version": "", "code": "INVALID_ARGUMENT"}
        )
        == 1
    )
    assert (
        sample(server, "jax_runtime_requests_total", {"model": "", "version": "", "code": "INVALID_ARGUMENT"})
        == 1
    )


def _scale_bf16(params: Any, x: Any) -> Any:
    return x * params["scale"]


async def test_bf16_tensors_travel_as_uint16_bit_patterns(tmp_path: Path) -> None:
    """BF16 inputs arrive as uint16 bits, are computed as bfloat16, and leave as uint16 bits."""
    params = {"scale": jnp.asarray([2.0], jnp.bfloat16)}
    export(
        _scale_bf16, params, [np.zeros((1, 2), ml_dtypes.bfloat16)], tmp_path / "bf" / "1",
        input_names=["x"], output_names=["y"], max_batch_size=1, platforms=None,
    )  # fmt: skip
    metrics = RuntimeMetrics()
    manager = ModelManager(tmp_path, make_loader(metrics), poll_interval_s=0, metrics=metrics)
    await manager.start()
    try:
        server = JaxInferenceServer(manager, metrics)
        bits = np.array([[1.5, -3.0]], ml_dtypes.bfloat16).view(np.uint16)
        response = await server.infer(InferenceRequest("bf", [Tensor("x", "BF16", (1, 2), bits)]), ctx())
        (y,) = response.outputs
        assert y.datatype == "BF16" and y.data.dtype == np.uint16
        np.testing.assert_array_equal(y.data.view(ml_dtypes.bfloat16).astype(np.float32), [[3.0, -6.0]])
        assert (
            sample(server, "jax_runtime_compile_duration_seconds_count", {"model": "bf", "version": "1"}) == 1
        )
    finally:
        await manager.close()

"""Prometheus counters move with real traffic; a dead backend is 503 / UNAVAILABLE."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from gateway.local_stack import LocalStack, free_port
from tests.integration.processes import gateway_process

pytestmark = pytest.mark.integration


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"http://{url}/metrics", timeout=10).text
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _tokens_input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("tokens", [1, 16], "INT32")
    tensor.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
    return tensor


def test_gateway_counters_move(stack: LocalStack, gateway_grpc: str, gateway_http: str) -> None:
    """N successful gRPC calls add N to the request counter and latency histograms of that model, under
    the JAX runtime backend's framework label ("jax"); an unrouted request counts under framework ""."""
    metrics_url = f"{stack.ports.host}:{stack.ports.gateway_metrics}"
    before = _samples(metrics_url)
    client = grpcclient.InferenceServerClient(url=gateway_grpc)
    for _ in range(5):
        client.infer("transformer", [_tokens_input()])
    with pytest.raises(InferenceServerException):
        client.infer("some-unknown-model", [_tokens_input()])
    client.close()
    bad = httpx.post(f"http://{gateway_http}/v2/models/transformer/infer", content=b"{not json", timeout=10)
    assert bad.status_code == 400
    after = _samples(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    jax = {"model": "transformer", "backend": "jax", "framework": "jax"}
    assert delta("gateway_requests_total", **jax, protocol="grpc", code="OK") == 5
    assert delta("gateway_request_duration_seconds_count", **jax, protocol="grpc") == 5
    assert delta("gateway_backend_duration_seconds_count", **jax) == 5
    bytes_labels = {"model": "transformer", "framework": "jax", "protocol": "grpc"}
    assert delta("gateway_request_bytes_total", **bytes_labels) > 0
    assert delta("gateway_response_bytes_total", **bytes_labels) > 0
    # A request the listener could not decode is counted too, under its routed model.
    assert delta("gateway_requests_total", **jax, protocol="rest", code="INVALID_ARGUMENT") == 1
    # The unknown model is counted under a bounded label, never under its own name.
    assert delta("gateway_requests_total", model="_unknown", backend="", framework="", code="NOT_FOUND") == 1
    assert _value(after, "gateway_backend_up", backend="jax", framework="jax") >= 1
    assert not any(dict(labels).get("model") == "some-unknown-model" for _, labels in after)


def test_one_model_on_two_frameworks(stack: LocalStack, gateway_grpc: str) -> None:
    """The same model through the JAX runtime and through TF Serving (its "tfserving" version) counts
    under one model label and two framework labels, what the framework comparison rules aggregate by."""
    if stack.tfserving is None:
        pytest.skip("the stack runs without TF Serving (TensorFlow is not installed)")
    metrics_url = f"{stack.ports.host}:{stack.ports.gateway_metrics}"
    before = _samples(metrics_url)
    client = grpcclient.InferenceServerClient(url=gateway_grpc)
    for version in ("", "tfserving", "tfserving"):
        client.infer("transformer", [_tokens_input()], model_version=version)
    client.close()
    after = _samples(metrics_url)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, model="transformer", **labels) - _value(
            before, name, model="transformer", **labels
        )

    assert delta("gateway_requests_total", framework="jax", backend="jax", code="OK") == 1
    tf = {"framework": "tensorflow", "backend": "tfserving"}
    assert delta("gateway_requests_total", **tf, version="tfserving", code="OK") == 2
    assert delta("gateway_backend_duration_seconds_count", **tf) == 2
    assert delta("gateway_request_bytes_total", framework="tensorflow") > 0
    assert _value(after, "gateway_backend_up", **tf) >= 1


def test_runtime_metrics_move(stack: LocalStack, runtime_grpc: str) -> None:
    """The JAX runtime's batch-size and compute-time histograms count the requests it served."""
    metrics_url = f"{stack.ports.host}:{stack.ports.runtime_metrics}"
    before = _samples(metrics_url)
    client = grpcclient.InferenceServerClient(url=runtime_grpc)
    for _ in range(3):
        client.infer("transformer", [_tokens_input()])
    client.close()
    after = _samples(metrics_url)
    batches = _value(after, "jax_runtime_batch_size_count", model="transformer") - _value(
        before, "jax_runtime_batch_size_count", model="transformer"
    )
    assert 1 <= batches <= 3
    assert _value(after, "jax_runtime_compute_duration_seconds_count", model="transformer") > _value(
        before, "jax_runtime_compute_duration_seconds_count", model="transformer"
    )
    assert _value(after, "jax_runtime_compile_duration_seconds_count", model="transformer") >= 1


def _dead_backend() -> dict[str, Any]:
    return {"kind": "v2", "endpoints": [f"127.0.0.1:{free_port()}"], "timeout_s": 5}


@pytest.fixture
def gateway_with_dead_backend(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A gateway alone whose only backend endpoint has nothing listening."""
    with gateway_process(
        tmp_path, {"jax": _dead_backend()}, [{"model": "cnn", "backend": "jax"}]
    ) as addresses:
        yield addresses


def test_dead_backend_is_unavailable(gateway_with_dead_backend: tuple[str, str]) -> None:
    """With the backend down, infer is 503 over REST and UNAVAILABLE over gRPC, naming the backend."""
    rest, grpc_url = gateway_with_dead_backend
    image = np.zeros((1, 28, 28, 1), dtype=np.float32)
    http = httpclient.InferenceServerClient(url=rest)
    grpc_client = grpcclient.InferenceServerClient(url=grpc_url)
    try:
        http_input = httpclient.InferInput("image", [1, 28, 28, 1], "FP32")
        http_input.set_data_from_numpy(image)
        with pytest.raises(InferenceServerException) as info:
            http.infer("cnn", [http_input])
        assert str(info.value.status()) == "503"
        assert "jax" in info.value.message()
        grpc_input = grpcclient.InferInput("image", [1, 28, 28, 1], "FP32")
        grpc_input.set_data_from_numpy(image)
        with pytest.raises(InferenceServerException) as info:
            grpc_client.infer("cnn", [grpc_input])
        assert str(info.value.status()) == "StatusCode.UNAVAILABLE"
        # The gateway itself can serve (its readiness is not its backends'); the model cannot.
        assert http.is_server_ready() and grpc_client.is_server_ready()
        assert not http.is_model_ready("cnn") and not grpc_client.is_model_ready("cnn")
    finally:
        http.close()
        grpc_client.close()


@pytest.fixture
def gateway_with_one_backend_down(stack: LocalStack, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A gateway routing `cnn` to the real JAX runtime and `ghost` to a backend with nothing listening."""
    backends = {
        "jax": {"kind": "v2", "endpoints": [f"127.0.0.1:{stack.ports.runtime_grpc}"]},
        "gone": _dead_backend(),
    }
    routes = [
        {"model": "cnn", "backend": "jax"},
        {"model": "ghost", "backend": "gone", "backend_model": "cnn"},
    ]
    with gateway_process(tmp_path, backends, routes) as addresses:
        yield addresses


def test_one_backend_down_leaves_the_others_models_ready(
    gateway_with_one_backend_down: tuple[str, str],
) -> None:
    """With one of two backends down, the gateway stays ready (REST, gRPC and grpc.health), the healthy
    backend's model stays ready and serves, and only the dead backend's model is not ready."""
    from grpc import insecure_channel
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    rest, grpc_url = gateway_with_one_backend_down
    http = httpclient.InferenceServerClient(url=rest)
    grpc_client = grpcclient.InferenceServerClient(url=grpc_url)
    try:
        assert http.is_server_ready() and grpc_client.is_server_ready()
        with insecure_channel(grpc_url) as channel:
            # grpc.health follows readiness by polling it each second: SERVING within a few.
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 5
            while True:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
                if status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
        assert http.is_model_ready("cnn") and grpc_client.is_model_ready("cnn")
        assert not http.is_model_ready("ghost") and not grpc_client.is_model_ready("ghost")
        image = grpcclient.InferInput("image", [1, 28, 28, 1], "FP32")
        image.set_data_from_numpy(np.zeros((1, 28, 28, 1), dtype=np.float32))
        assert grpc_client.infer("cnn", [image]).as_numpy("probabilities").shape == (1, 10)
        with pytest.raises(InferenceServerException) as info:
            grpc_client.infer("ghost", [image])
        assert str(info.value.status()) == "StatusCode.UNAVAILABLE"
    finally:
        http.close()
        grpc_client.close()

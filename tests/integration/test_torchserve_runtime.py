"""A real TorchServe 0.12.0 serving the example models through the project's handler and archives.

One server for the module, started with the project's config (token authorization on, management on
loopback, model API off) on free ports under a tmp workdir, spoken to over REST `/predictions` with the
project's tensor payload and the inference key from `key_file.json`; stopped with nothing left behind.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from gateway.codecs.torchserve.payload import (
    CONTENT_TYPE,
    decode_error,
    decode_response,
    encode_metadata_request,
    encode_request,
)
from gateway.local_stack import free_ports
from gateway.proto.torchserve import inference_pb2 as tpb
from gateway.types import Tensor
from runtimes.examples import SPECS, load_weights, sample_inputs
from runtimes.examples.weights import weights_path

torch: Any = pytest.importorskip("torch")
pytest.importorskip("ts")

from runtimes.torchserve.config import ModelEntry, TorchServeConfig  # noqa: E402
from runtimes.torchserve.examples import export_examples, signature_of  # noqa: E402
from runtimes.torchserve.launcher import TorchServeProcess, torchserve_command  # noqa: E402

pytestmark = pytest.mark.integration

RTOL, ATOL = 1e-5, 5e-6


@dataclass
class Server:
    url: str
    key: str
    process: TorchServeProcess
    weights: Path
    grpc_port: int


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("torchserve")
    export_examples(root / "store", weights=root / "weights")
    ports = free_ports(5)
    config = TorchServeConfig(
        model_store=root / "store",
        models=tuple(ModelEntry(name, f"{name}.mar", batch_size=4, max_batch_delay_ms=50) for name in SPECS),
        inference_port=ports[0],
        management_port=ports[1],
        metrics_port=ports[2],
        grpc_inference_port=ports[3],
        grpc_management_port=ports[4],
        heap_mb=128,
    )
    process = TorchServeProcess(
        torchserve_command(config, root / "work"),
        config.inference_url(),
        management_url=config.management_url(),
        models=tuple(SPECS),
    )
    process.start(timeout_s=120)
    assert process.keys is not None
    try:
        yield Server(config.inference_url(), process.keys.inference, process, root / "weights", ports[3])
    finally:
        group = process.proc.pid if process.proc else 0
        process.stop()
        left = subprocess.run(["ps", "-o", "pid=,cmd=", "-g", str(group)], capture_output=True, text=True)
        assert left.stdout.strip() == "", f"processes left behind: {left.stdout}"


def _post(server: Server, model: str, body: bytes, key: str | None = "") -> httpx.Response:
    headers = {"Content-Type": CONTENT_TYPE}
    if key is not None:
        headers["Authorization"] = f"Bearer {key or server.key}"
    return httpx.post(f"{server.url}/predictions/{model}", content=body, headers=headers, timeout=60)


def _inputs(name: str, rows: int, seed: int) -> list[Tensor]:
    spec = SPECS[name]
    arrays = sample_inputs(spec, np.random.default_rng(seed), rows)
    return [
        Tensor(t.name, d, x.shape, x)
        for t, d, x in zip(spec.inputs, (m.datatype for m in signature_of(spec).inputs), arrays, strict=True)
    ]


def _expected(server: Server, name: str, inputs: list[Tensor]) -> np.ndarray:
    from runtimes.torchserve.example_models import example_module

    module = example_module(name, load_weights(weights_path(server.weights, name)))
    with torch.inference_mode():
        out = module(*(torch.from_numpy(np.array(t.data)) for t in inputs))
    return np.asarray(out.numpy())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_predictions_equal_the_torch_model(server: Server, name: str) -> None:
    """Each archived example answers /predictions with the eager module's outputs, named by the signature."""
    inputs = _inputs(name, 3, seed=1)
    response = _post(server, name, encode_request(inputs))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE
    (output,) = decode_response(response.content)
    assert output.name == SPECS[name].outputs[0].name and output.datatype == "FP32"
    np.testing.assert_allclose(output.data, _expected(server, name, inputs), rtol=RTOL, atol=ATOL)


def test_stream_predictions_answer_once_and_the_worker_lives(server: Server) -> None:
    """TorchServe's StreamPredictions on an archived model streams the one answer and ends, and the model
    answers Predictions right after (without the handler's ts_stream_next header, 0.12.0's frontend fails
    the call with "Worker died." and reloads the model)."""
    inputs = _inputs("mlp", 2, seed=4)
    request = tpb.PredictionsRequest(model_name="mlp", input={"data": encode_request(inputs)})
    metadata = (("authorization", f"Bearer {server.key}"),)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stream = channel.unary_stream(
            "/org.pytorch.serve.grpc.inference.InferenceAPIsService/StreamPredictions",
            request_serializer=tpb.PredictionsRequest.SerializeToString,
            response_deserializer=tpb.PredictionResponse.FromString,
        )
        replies = list(stream(request, timeout=30, metadata=metadata))
    assert len(replies) == 1
    (output,) = decode_response(replies[0].prediction)
    np.testing.assert_allclose(output.data, _expected(server, "mlp", inputs), rtol=RTOL, atol=ATOL)
    response = _post(server, "mlp", encode_request(inputs))
    assert response.status_code == 200, response.text


def test_concurrent_requests_are_batched_and_split_back(server: Server) -> None:
    """Requests TorchServe batches together (batchSize 4) each get their own rows back."""
    requests = [_inputs("mlp", rows, seed=10 + rows) for rows in (1, 2, 3, 1, 2, 3, 1, 2)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: _post(server, "mlp", encode_request(i)), requests))
    for inputs, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        (output,) = decode_response(response.content)
        np.testing.assert_allclose(output.data, _expected(server, "mlp", inputs), rtol=RTOL, atol=ATOL)


def test_no_key_or_a_wrong_key_is_refused(server: Server) -> None:
    """Token authorization is on: no key and a wrong key get TorchServe's 400 InvalidKeyException."""
    body = encode_request(_inputs("mlp", 1, seed=2))
    for key in (None, "not-the-key"):
        response = _post(server, "mlp", body, key=key)
        assert response.status_code == 400
        assert decode_error(response.content)[:2] == (400, "InvalidKeyException")


def test_ping_needs_the_key_and_is_healthy(server: Server) -> None:
    """/ping is behind the token too; with the inference key it says Healthy."""
    assert httpx.get(f"{server.url}/ping").status_code == 400
    response = httpx.get(f"{server.url}/ping", headers={"Authorization": f"Bearer {server.key}"})
    assert response.status_code == 200 and response.json() == {"status": "Healthy"}


def test_malformed_payload_gets_a_400_naming_the_fault(server: Server) -> None:
    """A body that is not the payload is answered 400 InvalidRequest with a message saying why."""
    response = _post(server, "mlp", b"GWT1\xff\xff\xff\x7f")
    assert response.status_code == 400
    code, kind, message = decode_error(response.content)
    assert (code, kind) == (400, "InvalidRequest") and "header length" in message
    wrong = [Tensor("features", "FP32", (1, 3), np.zeros((1, 3), np.float32))]
    code, kind, message = decode_error(_post(server, "mlp", encode_request(wrong)).content)
    assert (code, kind) == (400, "InvalidRequest") and "shape [1, 3] does not match [-1, 16]" in message


def test_metadata_query_answers_the_signature(server: Server) -> None:
    """The metadata query returns the archive's signature.json."""
    response = _post(server, "transformer", encode_metadata_request())
    assert response.status_code == 200
    assert response.json() == signature_of(SPECS["transformer"]).to_json()


def test_a_second_start_in_the_same_workdir_serves_with_new_keys(server: Server) -> None:
    """Stopped and started again in its workdir (the last run's key_file.json still there), TorchServe
    serves with the keys it drew anew; the old inference key is refused. Last in the module: it restarts
    the module's server."""
    old = server.key
    server.process.stop()
    assert server.process.command.key_file.is_file()  # the stale file start() must not read
    server.process.start(timeout_s=120)
    assert server.process.keys is not None and server.process.keys.inference != old
    server.key = server.process.keys.inference
    body = encode_request(_inputs("mlp", 1, seed=4))
    assert _post(server, "mlp", body).status_code == 200
    assert _post(server, "mlp", body, key=old).status_code == 400

"""The TF Serving runtime as a real process, spoken to with the official TF Serving stubs and httpx.

One server for the module (TensorFlow takes seconds to import): a tiny SavedModel built here, two
versions served through a model config file (labels stable=1, canary=2), batching and monitoring on.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from gateway.local_stack import ManagedProcess
from runtimes.tfserving.launcher import tfserving_command

pytestmark = pytest.mark.integration

X = np.array([[1, 2, 3, 4], [0, 0, 0, 1]], np.float32)
WEIGHTS = np.array([[1], [2], [3], [4]], np.float32)


def expected(x: np.ndarray, version: int) -> np.ndarray:
    return np.asarray(x @ WEIGHTS * version, np.float32)


class _Model(tf.Module):
    def __init__(self, version: int) -> None:
        super().__init__()
        self.w = tf.Variable(WEIGHTS * version)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        y = tf.matmul(x, self.w)
        return {"y": y, "y_bytes": tf.strings.as_string(y[:, 0], precision=1)}


@dataclass(frozen=True)
class Server:
    grpc: str
    rest: str
    base_path: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root: Path = tmp_path_factory.mktemp("tfserving")
    for version in (1, 2):
        module = _Model(version)
        tf.saved_model.save(
            module, str(root / "m" / str(version)), signatures={"serving_default": module.serve}
        )
    config = root / "models.config"
    config.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{root / 'm'}' model_platform: 'tensorflow'\n"
        "  model_version_policy { all {} }\n"
        "  version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 } } }\n"
    )
    batching = root / "batching.config"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 2000 }\n")
    monitoring = root / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    command = tfserving_command(
        grpc_port=0,
        rest_port=0,
        model_config_file=config,
        monitoring_config_file=monitoring,
        enable_batching=True,
        batching_parameters_file=batching,
        extra_flags=("--rest_api_host=127.0.0.1", "--grpc_host=127.0.0.1"),
        prefer_binary=False,
    )
    process = ManagedProcess("tfserving", command.argv, command.ready_prefix)
    line = process.start(timeout_s=120, echo=False)
    ports = dict(re.findall(r"(grpc|rest)=(\S+)", line))
    try:
        yield Server(ports["grpc"], ports["rest"], root / "m")
    finally:
        process.stop()


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc) as ch:
        yield ch


def predict_request(x: np.ndarray, **spec: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = int(str(value))
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request


def test_grpc_predict_latest_replies_with_typed_fields(channel: grpc.Channel) -> None:
    """No version: the latest (2); outputs in float_val/string_val, as the real server's default."""
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request(X))
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    y = response.outputs["y"]
    assert not y.tensor_content and len(y.float_val) == 2
    np.testing.assert_array_equal(tf.make_ndarray(y), expected(X, 2))
    assert list(response.outputs["y_bytes"].string_val) == [b"60.0", b"8.0"]


def test_grpc_predict_typed_input_broadcast_label_and_output_filter(channel: grpc.Channel) -> None:
    """A one-value float_val broadcasts to the shape; the label picks version 1; the filter drops y_bytes."""
    request = predict_request(X, version_label="stable")
    request.inputs["x"].Clear()
    request.inputs["x"].dtype = tf.float32.as_datatype_enum
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].tensor_shape.dim.add(size=4)
    request.inputs["x"].float_val.append(1.0)
    request.output_filter.append("y")
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    assert response.model_spec.version.value == 1
    assert list(response.outputs) == ["y"]
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [[10.0]])


def test_grpc_errors_carry_tf_serving_codes(channel: grpc.Channel) -> None:
    """Unknown model or version: NOT_FOUND; a wrong input name: INVALID_ARGUMENT; Classify: UNIMPLEMENTED."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_request(X)
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "Servable not found for request: Latest(nope)"
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(predict_request(X, version=7))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bad = predict_request(X)
    bad.inputs["z"].CopyFrom(bad.inputs.pop("x"))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "z" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(classification_pb2.ClassificationRequest())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_metadata_holds_a_signature_def_map(channel: grpc.Channel) -> None:
    """GetModelMetadata's Any unpacks to a SignatureDefMap with the serving signature's tensors."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "m"
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    serving = signature_map.signature_def["serving_default"]
    assert list(serving.inputs) == ["x"] and set(serving.outputs) == {"y", "y_bytes"}


def test_grpc_model_status_lists_versions_and_refuses_unknown_models(channel: grpc.Channel) -> None:
    """Both versions AVAILABLE (policy all); an unknown model is NOT_FOUND."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    response = stub.GetModelStatus(request)
    states = {s.version: s.state for s in response.model_version_status}
    assert states == {1: 30, 2: 30}
    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelStatus(request)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_requests_are_batched_correctly(server: Server) -> None:
    """Batching on: concurrent requests of different sizes each get their own rows back."""
    async with grpc.aio.insecure_channel(server.grpc) as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        inputs = [np.full((1 + i % 3, 4), float(i), np.float32) for i in range(12)]
        responses = await asyncio.gather(*(stub.Predict(predict_request(x)) for x in inputs))
    for x, response in zip(inputs, responses, strict=True):
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), expected(x, 2))


def test_rest_predict_row_and_columnar(server: Server) -> None:
    """Row form answers `predictions` (one object per row), columnar `outputs`; *_bytes come as b64."""
    with httpx.Client(base_url=f"http://{server.rest}") as client:
        row = client.post("/v1/models/m:predict", json={"instances": X.tolist()})
        assert row.status_code == 200, row.text
        predictions = row.json()["predictions"]
        assert [p["y"] for p in predictions] == expected(X, 2).tolist()
        assert base64.b64decode(predictions[0]["y_bytes"]["b64"]) == b"60.0"
        columnar = client.post("/v1/models/m/versions/1:predict", json={"inputs": {"x": X.tolist()}})
        assert columnar.json()["outputs"]["y"] == expected(X, 1).tolist()
        labelled = client.post("/V1/MODELS/m/labels/canary:predict", json={"inputs": X.tolist()})
        assert labelled.json()["outputs"]["y"] == expected(X, 2).tolist()


def test_rest_nan_tokens_are_read_and_written(server: Server) -> None:
    """TF Serving's non-standard NaN token goes in and comes back out."""
    body = b'{"instances": [[NaN, 0, 0, 0]]}'
    response = httpx.post(f"http://{server.rest}/v1/models/m:predict", content=body)
    assert response.status_code == 200 and b"NaN" in response.content


def test_rest_status_and_metadata(server: Server) -> None:
    """Status lists versions with OK statuses; metadata nests signature_def twice, as the real server."""
    with httpx.Client(base_url=f"http://{server.rest}") as client:
        status = client.get("/v1/models/m/versions/1").json()
        assert status == {
            "model_version_status": [
                {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
        metadata = client.get("/v1/models/m/metadata").json()
        assert metadata["model_spec"]["version"] == "2"
        signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/models/nope:predict", b'{"instances": [[1,2,3,4]]}', 404, "Servable not found"),
        ("POST", "/v1/models/m:predict", b'{"instances": [[1,2,3]]}', 400, "input 'x'"),
        ("POST", "/v1/models/m:predict", b'{"instances": [1', 400, "JSON"),
        ("POST", "/v1/models/m:predict", b'{"instances": [[1,2,3,"4"]]}', 400, "input 'x'"),
        (
            "POST",
            "/v1/models/m:predict",
            b'{"signature_name": "nope", "instances": [[1,2,3,4]]}',
            400,
            'Serving signature key "nope" not found.',
        ),
        ("GET", "/v1/models/m/versions/x", b"", 400, "Malformed request"),
        ("GET", "/v1/models/nope", b"", 404, "nope"),
        ("POST", "/v1/models/m:classify", b"{}", 501, "Classify"),
    ],
)
def test_rest_errors_use_tf_serving_codes(
    server: Server, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    """Each error is {"error": ...} with TF Serving's HTTP status for its code."""
    response = httpx.request(method, f"http://{server.rest}{path}", content=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_metrics_use_tf_serving_names(server: Server, channel: grpc.Channel) -> None:
    """The monitoring config serves TF Serving's metric names on the REST port, for both entrypoints
    (this test makes its own calls: it does not depend on which tests ran before it)."""
    prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(predict_request(X))
    httpx.post(f"http://{server.rest}/v1/models/m:predict", json={"instances": X.tolist()})
    text = httpx.get(f"http://{server.rest}/monitoring/prometheus/metrics").text
    assert ':tensorflow:serving:request_count{model_name="m",status="OK"}' in text
    assert 'API="Predict",entrypoint="REST"' in text and 'entrypoint="GRPC"' in text
    assert ":tensorflow:serving:runtime_latency_bucket" in text


def test_reload_config_replaces_the_model_list(server: Server, channel: grpc.Channel) -> None:
    """HandleReloadConfigRequest: the new list (only version 2) unloads version 1. Runs last: it changes
    the module's server."""
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(
        f"model_config_list {{ config {{ name: 'm' base_path: '{server.base_path}' "
        "model_version_policy { specific { versions: 2 } } } }",
        request.config,
    )
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    assert stub.HandleReloadConfigRequest(request).status.error_code == 0
    status = httpx.get(f"http://{server.rest}/v1/models/m").json()["model_version_status"]
    assert {(s["version"], s["state"]) for s in status} == {("2", "AVAILABLE"), ("1", "END")}
    bad = model_management_pb2.ReloadConfigRequest()
    text_format.Parse("model_config_list { config { name: 'm' } }", bad.config)
    assert "base_path" in stub.HandleReloadConfigRequest(bad).status.error_message

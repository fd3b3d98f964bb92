"""A real MLServer (another OIP server, from `.venv-mlserver`) behind the gateway's `v2` backend, over gRPC
and over REST with `binary_data: false`: answers, metadata and readiness through the gateway with
tritonclient; and the binary extension left on toward it fails with a clean gateway error."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from gateway.local_stack import ManagedProcess, free_ports
from tests.integration.processes import gateway_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"
READY_TIMEOUT_S = 90.0

# A custom MLServer runtime, run by MLServer's own interpreter (it imports mlserver, which our venv lacks).
DOUBLE_RUNTIME = textwrap.dedent(
    """
    import numpy as np
    from mlserver import MLModel
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest, InferenceResponse


    class Double(MLModel):
        async def load(self) -> bool:
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
            y = NumpyCodec.encode_output("y", x * 2)
            return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[y])
    """
)


def _repository(root: Path, http: int, grpc: int) -> Path:
    """An MLServer model repository with one model, `double` (version 1), and server settings."""
    model = root / "double"
    model.mkdir(parents=True)
    (model / "double_runtime.py").write_text(DOUBLE_RUNTIME)
    tensor = {"datatype": "FP32", "shape": [-1, 3]}
    model_settings = {
        "name": "double",
        "implementation": "double_runtime.Double",
        "inputs": [{"name": "x", **tensor}],
        "outputs": [{"name": "y", **tensor}],
        "parameters": {"version": "1"},
    }
    (model / "model-settings.json").write_text(json.dumps(model_settings))
    settings = {
        "host": "127.0.0.1",
        "http_port": http,
        "grpc_port": grpc,
        "metrics_endpoint": None,  # no metrics server: one port fewer to pick
        "parallel_workers": 0,  # inference in the server process: no worker pool to start
        "debug": False,
        "environments_dir": str(root / ".envs"),
        "metrics_dir": str(root / ".metrics"),
    }
    (root / "settings.json").write_text(json.dumps(settings))
    return root


def _serves(http: str, grpc: str) -> bool:
    """Whether MLServer's REST and gRPC servers both answer that the server (and so its model) is ready."""
    try:
        return bool(
            httpclient.InferenceServerClient(http).is_server_ready()
            and grpcclient.InferenceServerClient(grpc).is_server_ready()
        )
    except (InferenceServerException, OSError):
        return False


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """MLServer serving `double`; yields its REST and gRPC addresses."""
    if not MLSERVER.exists():
        pytest.skip(".venv-mlserver does not exist: run scripts/mlserver_venv.sh (scripts/test.sh does)")
    http_port, grpc_port = free_ports(2)
    repository = _repository(tmp_path_factory.mktemp("mlserver"), http_port, grpc_port)
    # MLServer's log lines begin with a timestamp, so no ready line can be matched as a prefix: the process
    # counts as started at its first line, and readiness is then asked of both of its servers.
    proc = ManagedProcess("mlserver", [str(MLSERVER), "start", str(repository)], "")
    proc.start(timeout_s=READY_TIMEOUT_S, echo=False)
    http, grpc = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _serves(http, grpc):
            assert proc.proc is not None
            if proc.proc.poll() is not None or time.monotonic() > deadline:
                tail = "".join(proc.output[-40:])
                raise RuntimeError(f"MLServer did not become ready (exit code {proc.proc.poll()}):\n{tail}")
            time.sleep(0.2)
        yield http, grpc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gateway(mlserver: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway with MLServer behind it over gRPC, over JSON REST, and over binary REST (misconfigured)."""
    http, grpc = mlserver
    backends: dict[str, Any] = {
        "mls-grpc": {"kind": "v2", "endpoints": [grpc]},
        "mls-rest": {"kind": "v2", "protocol": "rest", "binary_data": False, "endpoints": [http]},
        "mls-binary": {"kind": "v2", "protocol": "rest", "endpoints": [http]},
    }
    routes = [
        {"model": "double", "backend": "mls-grpc"},
        {"model": "double-rest", "backend": "mls-rest", "backend_model": "double"},
        {"model": "double-binary", "backend": "mls-binary", "backend_model": "double"},
    ]
    with gateway_process(tmp_path_factory.mktemp("mls-gateway"), backends, routes) as running:
        yield running


X = np.array([[1.0, -2.5, 3.25], [0.0, 4.0, -8.0]], dtype=np.float32)


def _infer(client: Any, module: Any, model: str, binary: bool = True) -> np.ndarray:
    tensor = module.InferInput("x", list(X.shape), "FP32")
    if module is httpclient:
        tensor.set_data_from_numpy(X, binary_data=binary)
    else:
        tensor.set_data_from_numpy(X)
    result = client.infer(model, [tensor])
    out: np.ndarray = result.as_numpy("y")
    return out


@pytest.mark.parametrize("model", ["double", "double-rest"])
def test_infer_through_the_gateway(gateway: tuple[str, str], model: str) -> None:
    """MLServer doubles `x` behind both transports, for REST clients (binary and JSON) and gRPC clients."""
    rest, grpc = gateway
    http = httpclient.InferenceServerClient(rest)
    for binary in (True, False):
        out = _infer(http, httpclient, model, binary)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, X * 2)
    np.testing.assert_array_equal(_infer(grpcclient.InferenceServerClient(grpc), grpcclient, model), X * 2)


@pytest.mark.parametrize("model", ["double", "double-rest"])
def test_metadata_and_readiness(gateway: tuple[str, str], model: str) -> None:
    """MLServer's model metadata and readiness reach REST and gRPC clients through both transports."""
    rest, grpc = gateway
    http = httpclient.InferenceServerClient(rest)
    metadata = http.get_model_metadata(model)
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [("x", "FP32", [-1, 3])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [("y", "FP32", [-1, 3])]
    assert http.is_model_ready(model) and http.is_model_ready(model, model_version="1")
    over_grpc = grpcclient.InferenceServerClient(grpc)
    assert over_grpc.get_model_metadata(model).inputs[0].name == "x"
    assert over_grpc.is_model_ready(model)


def test_binary_extension_toward_mlserver_fails_cleanly(gateway: tuple[str, str]) -> None:
    """MLServer does not read the binary extension: with `binary_data` left on, the gateway answers a
    502 that names the backend, not a 500 and not MLServer's validation details."""
    rest, grpc = gateway
    with pytest.raises(InferenceServerException) as over_rest:
        _infer(httpclient.InferenceServerClient(rest), httpclient, "double-binary")
    assert str(over_rest.value.status()) == "502"
    message = over_rest.value.message()
    assert message is not None and "mls-binary" in message
    for internal in ("Traceback", "detail", "pydantic", "binary_data_size"):
        assert internal not in message
    with pytest.raises(InferenceServerException) as over_grpc:
        _infer(grpcclient.InferenceServerClient(grpc), grpcclient, "double-binary")
    assert over_grpc.value.status() == "StatusCode.UNAVAILABLE"
    assert "mls-binary" in (over_grpc.value.message() or "")

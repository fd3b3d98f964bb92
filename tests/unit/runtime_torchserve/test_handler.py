"""The project's TorchServe handler, in-process with torch and a fake TorchServe context (no server)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.codecs.torchserve.payload import (
    decode_error,
    decode_response,
    encode_metadata_request,
    encode_request,
)
from gateway.codecs.torchserve.signature import loads_signature
from gateway.types import Tensor

torch: Any = pytest.importorskip("torch")

from runtimes.torchserve.handler import TensorHandler  # noqa: E402

SIGNATURE = loads_signature(
    json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "k", "datatype": "INT64", "shape": [-1]},
            ],
            "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "n", "datatype": "INT64", "shape": [-1]},
            ],
        }
    )
)


class Model(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: Any, k: Any) -> Any:
        self.calls.append(int(x.shape[0]))
        return x * 2, k + 1


class Plain(torch.nn.Module):  # type: ignore[misc]
    def forward(self, x: Any, k: Any) -> Any:
        return x * 2, k + 1


class Context:
    """What the handler uses of TorchServe's `ts.context.Context`: per-request status and headers."""

    def __init__(self, request_headers: dict[int, dict[str, Any]] | None = None) -> None:
        self.status: dict[int, tuple[int, str]] = {}
        self.types: dict[int, str] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.request_headers = request_headers or {}

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.status[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.types[idx] = value

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.headers.setdefault(idx, {})[key] = value

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self.request_headers.get(idx, {})


def _request(rows: int, seed: int) -> dict[str, Any]:
    x = np.random.default_rng(seed).random((rows, 3), dtype=np.float32)
    k = np.arange(rows, dtype=np.int64) + seed
    # TorchServe hands the raw body as a bytearray under "body".
    return {
        "body": bytearray(
            encode_request([Tensor("k", "INT64", (rows,), k), Tensor("x", "FP32", (rows, 3), x)])
        )
    }


def _handler() -> tuple[TensorHandler, Model]:
    handler, model = TensorHandler(), Model()
    handler.use(model, SIGNATURE)
    return handler, model


def test_a_batch_of_requests_runs_once_and_is_split_back() -> None:
    """Requests of 1, 3 and 2 rows run as one 6-row call; each gets its own rows, named by the signature."""
    handler, model = _handler()
    requests = [_request(1, 0), _request(3, 1), _request(2, 2)]
    context = Context()
    answers = handler.handle(requests, context)
    assert model.calls == [6]
    for request, answer in zip(requests, answers, strict=True):
        sent = {t.name: t.data for t in encode_and_back(request)}
        y, n = decode_response(answer)
        assert (y.name, y.datatype, n.name, n.datatype) == ("y", "FP32", "n", "INT64")
        np.testing.assert_array_equal(y.data, sent["x"] * 2)
        np.testing.assert_array_equal(n.data, sent["k"] + 1)
    assert context.status == {} and set(context.types.values()) == {"application/octet-stream"}


def test_grpc_answers_are_marked_whole_and_http_ones_are_not() -> None:
    """A request that came over gRPC (only its inputs as properties) gets ts_stream_next "false", which
    TorchServe's StreamPredictions needs; one over HTTP (its headers and url_path) none, which would make
    its answer a chunked stream."""
    handler, _ = _handler()
    http = {"url_path": "", "Host": "127.0.0.1:8080", "content-type": "application/octet-stream"}
    grpc_properties = {"data": {"content-type": ""}}
    context = Context({0: grpc_properties, 1: http})
    handler.handle([_request(1, 0), _request(1, 1)], context)
    assert context.headers == {0: {"ts_stream_next": "false"}}


def encode_and_back(request: dict[str, Any]) -> list[Tensor]:
    from gateway.codecs.torchserve.payload import decode_request

    return decode_request(bytes(request["body"]))


def test_a_bad_request_fails_alone() -> None:
    """A malformed request gets its own 400 in TorchServe's error shape; the rest of the batch is served."""
    handler, model = _handler()
    wrong = {"body": bytearray(encode_request([Tensor("x", "FP32", (1, 2), np.zeros((1, 2), np.float32))]))}
    context = Context()
    answers = handler.handle([_request(2, 0), wrong, {"body": bytearray(b"nope")}, _request(1, 1)], context)
    assert model.calls == [3]
    assert context.status == {1: (400, "InvalidRequest"), 2: (400, "InvalidRequest")}
    assert (
        "shape [1, 2] does not match [-1, 3]" in decode_error(answers[1])[2]
        or "missing input 'k'" in decode_error(answers[1])[2]
    )
    assert decode_error(answers[2])[:2] == (400, "InvalidRequest")
    assert len(decode_response(answers[3])[0].data) == 1


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([Tensor("x", "FP32", (1, 3), np.zeros((1, 3), np.float32))], "missing input 'k'"),
        ([Tensor("z", "FP32", (1,), np.zeros(1, np.float32))], "unknown input 'z'"),
        (
            [
                Tensor("x", "FP64", (1, 3), np.zeros((1, 3))),
                Tensor("k", "INT64", (1,), np.zeros(1, np.int64)),
            ],
            "input 'x': datatype FP64, the model takes FP32",
        ),
        (
            [
                Tensor("x", "FP32", (2, 3), np.zeros((2, 3), np.float32)),
                Tensor("k", "INT64", (1,), np.zeros(1, np.int64)),
            ],
            "input 'k': 1 rows, the other inputs have 2",
        ),
    ],
)
def test_requests_are_checked_against_the_signature(tensors: list[Tensor], message: str) -> None:
    """Inputs must be the signature's: names, datatypes, fixed dims, the same row count."""
    handler, model = _handler()
    (answer,) = handler.handle([{"body": bytearray(encode_request(tensors))}], Context())
    assert message in decode_error(answer)[2] and model.calls == []


def test_requested_outputs_and_metadata_query() -> None:
    """`outputs` limits what comes back; the metadata query answers the signature as JSON."""
    handler, _ = _handler()
    x, k = np.ones((1, 3), np.float32), np.ones(1, np.int64)
    body = encode_request([Tensor("x", "FP32", (1, 3), x), Tensor("k", "INT64", (1,), k)], outputs=["n"])
    context = Context()
    only, meta = handler.handle(
        [{"data": bytearray(body)}, {"body": bytearray(encode_metadata_request())}], context
    )
    assert [t.name for t in decode_response(only)] == ["n"]
    assert json.loads(meta) == SIGNATURE.to_json() and context.types[1] == "application/json"


def test_a_model_failure_is_a_500_without_its_text() -> None:
    """An exception in the model answers every request of that run 500 ModelError, naming only its class."""
    handler = TensorHandler()

    def broken(x: Any, k: Any) -> Any:
        raise RuntimeError("secret internals")

    handler.use(broken, SIGNATURE)
    context = Context()
    answers = handler.handle([_request(1, 0), _request(1, 1)], context)
    for answer in answers:
        code, kind, message = decode_error(answer)
        assert (code, kind) == (500, "ModelError") and "RuntimeError" in message and "secret" not in message
    assert context.status == {0: (500, "ModelError"), 1: (500, "ModelError")}


def test_outputs_that_break_the_signature_are_reported() -> None:
    """A model returning the wrong dtype or row count is a 500 that says so."""
    handler = TensorHandler()
    handler.use(lambda x, k: (x.double(), k), SIGNATURE)
    (answer,) = handler.handle([_request(2, 0)], Context())
    assert "output 'y': dtype float64, the signature says FP32" in decode_error(answer)[2]
    handler.use(lambda x, k: (x[:1], k), SIGNATURE)
    (answer,) = handler.handle([_request(2, 0)], Context())
    assert "output 'y': 1 rows for 2 input rows" in decode_error(answer)[2]


def test_bf16_and_dict_outputs() -> None:
    """BF16 travels as bit patterns into a bfloat16 tensor and back; a dict output is matched by name."""
    signature = loads_signature(
        '{"inputs":[{"name":"h","datatype":"BF16","shape":[-1]}],"outputs":[{"name":"o","datatype":"BF16","shape":[-1]}]}'
    )
    handler = TensorHandler()
    handler.use(lambda h: {"o": h * 2}, signature)
    bits = np.array([0x3F80, 0xC000], np.uint16)  # 1.0, -2.0
    (answer,) = handler.handle(
        [{"body": bytearray(encode_request([Tensor("h", "BF16", (2,), bits)]))}], Context()
    )
    (out,) = decode_response(answer)
    assert out.data.tolist() == [0x4000, 0xC080]  # 2.0, -4.0


@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_archive_is_self_contained_and_loads(tmp_path: Path) -> None:
    """`package` writes a .mar with the handler, codec modules and signature.json, which loads and serves."""
    from runtimes.torchserve.archive import package

    scripted = torch.jit.trace(Plain().eval(), (torch.zeros(1, 3), torch.zeros(1, dtype=torch.int64)))
    scripted.save(str(tmp_path / "m.pt"))
    (tmp_path / "sig.json").write_text(SIGNATURE.dumps())
    mar = package(
        str(tmp_path / "m.pt"), tmp_path / "sig.json", name="m", version="2", out=tmp_path / "store"
    )
    with zipfile.ZipFile(mar) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unpacked")
    assert {"m.pt", "signature.json", "gateway_tensor_handler.py", "MAR-INF/MANIFEST.json"} <= names
    assert {
        "gateway/codecs/torchserve/payload.py",
        "runtimes/torchserve/handler.py",
        "gateway/errors.py",
    } <= names
    manifest = json.loads((tmp_path / "unpacked" / "MAR-INF" / "MANIFEST.json").read_text())
    assert (
        manifest["model"]["modelVersion"] == "2"
        and manifest["model"]["handler"] == "gateway_tensor_handler.py"
    )
    handler = TensorHandler()
    handler.load(tmp_path / "unpacked", "m.pt")
    (answer,) = handler.handle([_request(2, 3)], Context())
    assert [t.name for t in decode_response(answer)] == ["y", "n"]


@pytest.mark.parametrize(
    ("raised", "status"),
    [(RecursionError("deep"), (400, "InvalidRequest")), (KeyError("bug"), (500, "ModelError"))],
)
def test_an_exception_decoding_one_request_fails_that_request_alone(
    monkeypatch: pytest.MonkeyPatch, raised: Exception, status: tuple[int, str]
) -> None:
    """Anything raised while decoding a request answers that request (400 for a too-deep payload, else 500
    naming the class only); TorchServe would fail the whole batch with 503 on an escaping exception."""
    import runtimes.torchserve.handler as module

    real = module.parse_request

    def parse(body: bytes | bytearray) -> Any:
        if bytes(body) == b"poison":
            raise raised
        return real(body)

    monkeypatch.setattr(module, "parse_request", parse)
    handler, model = _handler()
    context = Context()
    answers = handler.handle([_request(1, 0), {"body": bytearray(b"poison")}, _request(2, 1)], context)
    assert context.status == {1: status} and model.calls == [3]
    code, kind, message = decode_error(answers[1])
    assert (code, kind) == status and "bug" not in message
    assert [len(decode_response(answers[i])[0].data) for i in (0, 2)] == [1, 2]


def test_a_deeply_nested_header_is_a_400() -> None:
    """A header of arrays nested past the interpreter's recursion limit is the client's 400, not a crash."""
    handler, _ = _handler()
    header = b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    body = b"GWT1" + len(header).to_bytes(4, "little") + header
    context = Context()
    (answer,) = handler.handle([{"body": bytearray(body)}], context)
    assert context.status == {0: (400, "InvalidRequest")}
    assert "nested too deeply" in decode_error(answer)[2]


def test_an_output_that_cannot_be_encoded_fails_its_request_alone() -> None:
    """A BYTES output row holding a number cannot be encoded: that request gets 500 ModelError, the other
    request of the same run its outputs."""
    signature = loads_signature(
        '{"inputs":[{"name":"h","datatype":"FP32","shape":[-1]}],'
        '"outputs":[{"name":"o","datatype":"BYTES","shape":[-1]}]}'
    )
    handler = TensorHandler()
    handler.use(lambda h: [b"ok" if float(v) >= 0 else 12345 for v in h], signature)
    ok, bad = (
        {"body": bytearray(encode_request([Tensor("h", "FP32", (1,), np.array([v], np.float32))]))}
        for v in (1.0, -1.0)
    )
    context = Context()
    good_answer, bad_answer = handler.handle([ok, bad], context)
    assert decode_response(good_answer)[0].data.tolist() == [b"ok"]
    assert context.status == {1: (500, "ModelError")}
    assert decode_error(bad_answer)[:2] == (500, "ModelError")


def test_client_strings_in_messages_are_clipped() -> None:
    """Names the client chose (an unknown input or output, a gRPC field) are clipped in the 400's message."""
    handler, _ = _handler()
    long = "z" * 10_000
    x, k = np.ones((1, 3), np.float32), np.ones(1, np.int64)
    unknown_input = encode_request([Tensor(long, "FP32", (1,), np.zeros(1, np.float32))])
    unknown_output = encode_request(
        [Tensor("x", "FP32", (1, 3), x), Tensor("k", "INT64", (1,), k)], outputs=[long]
    )
    answers = handler.handle(
        [
            {"body": bytearray(unknown_input)},
            {"body": bytearray(unknown_output)},
            {long: bytearray(b""), "other": bytearray(b"")},
        ],
        Context(),
    )
    for answer in answers:
        code, _, message = decode_error(answer)
        assert code == 400 and len(message) < 1_000 and "zzzz" in message

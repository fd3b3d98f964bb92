"""The REST listener in-process (ASGI, fake model): TF Serving's JSON refusals, limits, codes and metrics."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from runtimes.tfserving.rest_api import RestApp
from runtimes.tfserving.service import TFServingCore
from tests.unit.runtime_tfserving.fakes import FakeModel, fake_core

METRICS = "/metrics"


@pytest.fixture
async def model() -> AsyncIterator[FakeModel]:
    fake = FakeModel()
    yield fake
    fake.gate.set()  # a test's blocked run (if any) ends


@pytest.fixture
async def core(tmp_path: Path, model: FakeModel) -> AsyncIterator[TFServingCore]:
    served = await fake_core(tmp_path, model, max_request_bytes=4096)
    yield served
    await served.manager.close()
    served.close()


@pytest.fixture
async def client(core: TFServingCore) -> AsyncIterator[httpx.AsyncClient]:
    app = RestApp(core, metrics_path=METRICS, timeout_s=10)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        yield http


async def predict(client: httpx.AsyncClient, doc: dict[str, Any], model: str = "m") -> httpx.Response:
    return await client.post(f"/v1/models/{model}:predict", content=orjson.dumps(doc))


async def test_predict_row_and_columnar(client: httpx.AsyncClient) -> None:
    """Row requests answer `predictions`, columnar ones `outputs`, computed by the signature."""
    row = await predict(client, {"instances": [[1, 2], [3, 4.5]]})
    assert row.status_code == 200, row.text
    assert row.json() == {"predictions": [3.0, 7.5]}
    columnar = await predict(client, {"inputs": {"x": [[1, 1]]}})
    assert columnar.json() == {"outputs": [2.0]}


@pytest.mark.parametrize(
    ("signature", "value", "message"),
    [
        ("ints", [2.7], "input 'x'"),  # numpy would truncate it to 2
        ("floats", ["1.5"], "input 'x'"),  # numpy would parse the string
        ("bools", [5], "input 'x'"),  # numpy would take it as True
        ("floats", [True], "input 'x'"),  # numpy would take it as 1.0
        ("ints", [[1, 2], [3]], "input 'x'"),  # ragged
        ("complex", [1], "DT_COMPLEX64"),  # no JSON form in the gateway's codec: gRPC only
    ],
)
async def test_values_tf_serving_refuses_are_refused(
    client: httpx.AsyncClient, signature: str, value: Any, message: str
) -> None:
    """A JSON value of the wrong type for the input is a 400 naming it, never silently converted."""
    response = await predict(client, {"signature_name": signature, "inputs": value})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    "doc",
    [
        {"instances": [{"x" * 3000: [1, 2]}]},  # a row key: an input name the signature lacks
        {"inputs": {"x": [["v" * 3000, 1]]}},  # numpy's message would quote the value
        {"signature_name": "s" * 3000, "inputs": [1]},
    ],
)
async def test_error_messages_clip_client_strings(client: httpx.AsyncClient, doc: dict[str, Any]) -> None:
    """Client strings (names, values) are quoted clipped: the error does not grow with them."""
    response = await predict(client, doc)
    assert response.status_code == 400
    error = response.json()["error"]
    assert len(error) < 1024 and "could not convert" not in error


async def test_unknown_signature_is_failed_precondition(client: httpx.AsyncClient) -> None:
    """TF Serving's predict_util: `Serving signature key "X" not found.`, FAILED_PRECONDITION (400), and
    the metric counts it under its own code, not under the one HTTP 400 suggests first."""
    response = await predict(client, {"signature_name": "nope", "inputs": [[1, 2]]})
    assert response.status_code == 400
    assert response.json() == {"error": 'Serving signature key "nope" not found.'}
    text = (await client.get(METRICS)).text
    assert 'request_count{model_name="m",status="FAILED_PRECONDITION"} 1.0' in text


async def test_strings_not_utf8_are_written_as_b64(client: httpx.AsyncClient) -> None:
    """An output not named *_bytes is text, except bytes that are not UTF-8: b64, not replaced."""
    response = await predict(client, {"signature_name": "strings", "inputs": [{"b64": "/w=="}, "ok"]})
    assert response.json() == {"outputs": [{"b64": "/w=="}, "ok"]}
    named = await predict(client, {"signature_name": "strings_bytes", "inputs": ["ok"]})
    assert named.json() == {"outputs": [{"b64": base64.b64encode(b"ok").decode()}]}


async def test_bfloat16_round_trips_as_numbers(client: httpx.AsyncClient) -> None:
    """DT_BFLOAT16 inputs and outputs are JSON numbers (the codec's BF16 bit patterns viewed as bf16)."""
    response = await predict(client, {"signature_name": "bf16", "inputs": [1.5, -2.0]})
    assert response.json() == {"outputs": [1.5, -2.0]}


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    """A body larger than max_request_bytes is refused with 413 and TF Serving's error body."""
    response = await predict(client, {"signature_name": "floats", "inputs": [0.5] * 2000})
    assert response.status_code == 413
    assert "limit of 4096 bytes" in response.json()["error"]
    text = (await client.get(METRICS)).text
    assert 'status="RESOURCE_EXHAUSTED"' in text


async def test_unknown_models_share_one_metric_label(client: httpx.AsyncClient) -> None:
    """Model names from URLs label metrics only when served: others are `_unknown` (bounded labels)."""
    for name in ("nope1", "nope2"):
        assert (await predict(client, {"inputs": [[1, 2]]}, model=name)).status_code == 404
    text = (await client.get(METRICS)).text
    assert "nope" not in text
    assert 'request_count{model_name="_unknown",status="NOT_FOUND"} 2.0' in text


async def test_cancelled_request_is_counted_cancelled(core: TFServingCore, model: FakeModel) -> None:
    """A request cancelled while the model runs is counted CANCELLED (not lost, not OK)."""
    body = orjson.dumps({"signature_name": "slow", "inputs": [1.0]})
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/m:predict",
        "headers": [(b"content-length", str(len(body)).encode())],
    }

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    app = RestApp(core, metrics_path=METRICS, timeout_s=10)
    task = asyncio.create_task(app(scope, receive, send))
    assert await asyncio.to_thread(model.started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 'request_count{model_name="m",status="CANCELLED"} 1.0' in core.metrics.exposition().decode()

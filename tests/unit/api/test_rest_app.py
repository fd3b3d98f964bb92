"""The REST listener built by `create_app`, driven in-process over ASGI."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from gateway.api.admission import InFlightLimit
from gateway.api.rest.app import create_app
from tests.unit.api.fakes import FakeServer

BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]})
ENCODERS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}


def _client(
    server: FakeServer, max_request_bytes: int = 1 << 20, max_in_flight: int = 0
) -> httpx.AsyncClient:
    app = create_app(server, max_request_bytes=max_request_bytes, limit=InFlightLimit(max_in_flight))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.mark.parametrize("encoding", list(ENCODERS))
async def test_compressed_request_body_is_decoded(encoding: str) -> None:
    """A body sent with Content-Encoding gzip or deflate (as tritonclient compresses) is served."""
    async with _client(FakeServer()) as client:
        reply = await client.post(
            "/v2/models/m/infer", content=ENCODERS[encoding](BODY), headers={"content-encoding": encoding}
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["shape"] == [4]


@pytest.mark.parametrize(
    ("body", "encoding", "status", "message"),
    [
        (gzip.compress(b" " * 10_000 + BODY), "gzip", 413, "decoded request body exceeds the limit"),
        (BODY, "gzip", 400, "not valid gzip data"),
        (zlib.compress(BODY)[:-8], "deflate", 400, "truncated deflate data"),
        (BODY, "br", 400, "unsupported Content-Encoding 'br'"),
    ],
    ids=["bomb", "not-gzip", "truncated", "unknown-encoding"],
)
async def test_bad_compressed_body_is_refused(body: bytes, encoding: str, status: int, message: str) -> None:
    """A decoded body over the limit is 413; undecodable or unknown encodings are 400, by the one table."""
    async with _client(FakeServer(), max_request_bytes=4096) as client:
        reply = await client.post("/v2/models/m/infer", content=body, headers={"content-encoding": encoding})
    assert reply.status_code == status
    assert message in reply.json()["error"]


async def _call(app: Any, receive: Callable[[], Any]) -> list[dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v2/models/m/infer",
        "raw_path": b"/v2/models/m/infer",
        "query_string": b"",
        "headers": [(b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_client_disconnect_mid_body_is_not_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    """A client that hangs up while sending the body is CANCELLED (499), with no error traceback logged."""
    messages = iter(
        [
            {"type": "http.request", "body": BODY[:10], "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    with caplog.at_level(logging.ERROR):
        sent = await _call(create_app(FakeServer()), receive)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_request_cancelled_by_shutdown_gets_protocol_503() -> None:
    """An inference cut off by the listener's shutdown answers 503 with an `{"error": ...}` body."""
    server = FakeServer(delay_s=10)
    messages = iter([{"type": "http.request", "body": BODY, "more_body": False}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    task = asyncio.create_task(_call(create_app(server), receive))
    await asyncio.wait_for(server.called.wait(), 5)
    task.cancel()  # what uvicorn does to requests still running when the grace period ends
    sent = await task
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"]) == {"error": "the server is shutting down"}


async def test_undecodable_request_is_reported_as_rejected() -> None:
    """A malformed infer body is 400 and reported to the server once, with its model and code."""
    server = FakeServer()
    async with _client(server) as client:
        reply = await client.post("/v2/models/m/infer", content=b"{not json")
    assert reply.status_code == 400
    assert server.rejected == [("m", "rest", "INVALID_ARGUMENT")]
    assert not server.called.is_set()


async def test_requests_past_max_in_flight_are_refused_429_but_probes_are_not() -> None:
    """With max_in_flight 1 and one inference running, a second is refused 429 (counted as rejected)
    while health and metadata calls still answer; once the first finishes, inference is taken again."""
    server = FakeServer(delay_s=0.2)
    async with _client(server, max_in_flight=1) as client:
        first = asyncio.ensure_future(client.post("/v2/models/m/infer", content=BODY))
        await asyncio.wait_for(server.called.wait(), 5)
        refused = await client.post("/v2/models/m/infer", content=BODY)
        assert refused.status_code == 429 and "max_in_flight 1" in refused.json()["error"]
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.get("/v2/models/m")).status_code == 200
        assert (await first).status_code == 200
        assert (await client.post("/v2/models/m/infer", content=BODY)).status_code == 200
    assert server.rejected == [("m", "rest", "RESOURCE_EXHAUSTED")]


@pytest.mark.parametrize("value", ["+14", "1_4", "14.0", "0x0e", "1\u00b2"])
async def test_header_length_must_be_decimal_digits(value: str) -> None:
    """Inference-Header-Content-Length that int() would take but is not plain decimal digits is a 400
    naming the header (a server behind us may read "+14" differently)."""
    async with _client(FakeServer()) as client:
        reply = await client.post(
            "/v2/models/m/infer",
            content=BODY,
            headers={"inference-header-content-length": value.encode("latin-1")},
        )
    assert reply.status_code == 400
    assert "Inference-Header-Content-Length must be a non-negative decimal integer" in reply.json()["error"]


async def test_long_path_is_clipped_in_the_404() -> None:
    """A 60 KB unknown path is not echoed whole: the error quotes its start and its length."""
    path = "/v2/" + "p" * 60_000
    async with _client(FakeServer()) as client:
        reply = await client.get(path)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert len(error) < 400 and f"({len(path)} characters)" in error


async def test_header_length_of_thousands_of_digits_is_400() -> None:
    """A header length of 5000 digits (past int()'s digit limit) is the client's 400, not a 500."""
    async with _client(FakeServer()) as client:
        reply = await client.post(
            "/v2/models/m/infer", content=BODY, headers={"inference-header-content-length": "9" * 5000}
        )
    assert reply.status_code == 400
    assert "exceeds any body length" in reply.json()["error"]


async def test_an_unexpected_decoding_failure_is_answered_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in decoding is a 500 "internal error", logged with its traceback and counted as INTERNAL once."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a decoding bug")

    monkeypatch.setattr("gateway.api.rest.app.codec.decode_infer_request", broken)
    server = FakeServer()
    with caplog.at_level(logging.ERROR, logger="gateway.api.rest.app"):
        async with _client(server) as client:
            reply = await client.post("/v2/models/m/infer", json={"inputs": []})
    assert reply.status_code == 500 and orjson.loads(reply.content) == {"error": "internal error"}
    assert server.rejected == [("m", "rest", "INTERNAL")]
    assert "a decoding bug" in caplog.text


async def test_a_refusal_names_the_version_asked_for() -> None:
    """A request refused before inference is reported with its version, which picks the route counted."""
    server = FakeServer()
    async with _client(server) as client:
        reply = await client.post("/v2/models/m/versions/7/infer", content=b"{not json")
    assert reply.status_code == 400
    assert server.rejected_versions == ["7"]

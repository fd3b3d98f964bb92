"""The key relay: who it admits (the Secret's key, in TorchServe's refusal shape otherwise), what it forwards
(the pod's key in place of the caller's, inference paths only), and what it does when TorchServe refuses
the pod's key; REST through its ASGI app against a fake TorchServe, gRPC through real grpc.aio servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from gateway.codecs.torchserve.payload import error_body
from runtimes.torchserve._relay_grpc import SERVICE, SERVICE_NAME, forwarded_metadata, start_grpc_relay
from runtimes.torchserve._relay_rest import RestRelay, forwarded_headers
from runtimes.torchserve.podkey import PodKey
from runtimes.torchserve.relay import KEY_REFUSED, CallerKey
from tests.unit.runtime_torchserve.test_podkey import T0, write_key_file

SECRET = "the-gateways-key"


def _secret(tmp_path: Path, key: str = SECRET) -> Path:
    path = tmp_path / "secret-key"
    path.write_text(key + "\n")
    return path


# --- the caller's key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "admitted"),
    [
        (f"Bearer {SECRET}", True),
        (f"Bearer   {SECRET}", True),  # TorchServe's `Bearer\s+(\S+)`
        (None, False),
        ("", False),
        ("Bearer", False),
        (f"Basic {SECRET}", False),
        (f"Bearer {SECRET}x", False),
        (f"Bearer {SECRET[:-1]}", False),
        (f"Bearer {SECRET} extra", False),
        ("Bearer ключ", False),  # not ASCII: refused, not an error
    ],
)
def test_only_the_secrets_key_is_admitted(tmp_path: Path, authorization: str | None, admitted: bool) -> None:
    """The Secret file's key, as TorchServe parses a bearer header; anything else is refused."""
    assert CallerKey(_secret(tmp_path)).admits(authorization) is admitted


def test_a_missing_secret_admits_no_one(tmp_path: Path) -> None:
    """No Secret file (not mounted yet): every caller is refused, none admitted by an empty key."""
    caller = CallerKey(tmp_path / "absent")
    assert not caller.admits("Bearer ") and not caller.admits("Bearer x") and "absent" not in repr(caller)


def test_a_rotated_secret_is_admitted_at_once_and_the_old_key_for_a_grace_period(tmp_path: Path) -> None:
    """After rotation the new key is admitted on first sight; the previous one only within the grace."""
    now = [0.0]
    path = _secret(tmp_path, "old-key")
    caller = CallerKey(path, previous_key_grace_s=120.0, clock=lambda: now[0])
    assert caller.admits("Bearer old-key")
    path.write_text("the-new-key\n")
    assert caller.admits("Bearer the-new-key")  # a mismatch makes it look at the file at once
    now[0] += 119.0
    assert caller.admits("Bearer old-key")
    now[0] += 2.0
    assert not caller.admits("Bearer old-key") and caller.admits("Bearer the-new-key")


def test_refused_keys_look_at_the_secret_at_most_once_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood of bad keys (the Secret not mounted: each look logs a warning) makes one look a second, not
    one per request; a rotation is still seen at the first refusal after that second."""
    now = [0.0]
    path = tmp_path / "secret-key"
    caller = CallerKey(path, clock=lambda: now[0])
    caplog.clear()
    for _ in range(1_000):
        assert not caller.admits("Bearer wrong")
    assert len(caplog.records) == 1
    path.write_text("the-new-key\n")
    now[0] += 0.5
    assert not caller.admits("Bearer the-new-key")  # looked at the file 0.5 s ago
    now[0] += 0.5
    assert caller.admits("Bearer the-new-key")
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


# --- what is forwarded -------------------------------------------------------------------------------------


def test_rest_headers_carry_the_pods_key_and_no_hop_by_hop_headers() -> None:
    """The caller's key is replaced, Host/Content-Length/hop-by-hop (and Connection-named) headers dropped."""
    headers = [
        (b"Authorization", b"Bearer caller"),
        (b"host", b"torchserve:8080"),
        (b"content-type", b"application/octet-stream"),
        (b"content-length", b"12"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"x-hop", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"x-request-id", b"abc"),
    ]
    assert forwarded_headers(headers, "Bearer pod") == [
        (b"content-type", b"application/octet-stream"),
        (b"x-request-id", b"abc"),
        (b"authorization", b"Bearer pod"),
    ]


def test_grpc_metadata_carries_the_pods_key_and_none_of_grpcs_own() -> None:
    """The caller's authorization is replaced; gRPC's reserved keys are left to the channel."""
    metadata = (
        ("authorization", "Bearer caller"),
        ("user-agent", "grpc-python"),
        (":authority", "x"),
        ("grpc-timeout", "1S"),
        ("x-request-id", "abc"),
        ("trace-bin", b"\x00\x01"),
    )
    assert forwarded_metadata(metadata, "Bearer pod") == (
        ("x-request-id", "abc"),
        ("trace-bin", b"\x00\x01"),
        ("authorization", "Bearer pod"),
    )


# --- REST, against a fake TorchServe -----------------------------------------------------------------------


class FakeTorchServe:
    """TorchServe's inference API and token API: refuses any key but the key file's inference key."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        self.key = "pod-key-1"
        self.requests: list[httpx.Request] = []
        self.renewals = 0
        write_key_file(key_file, self.key, T0 + 3600)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.renewals += 1
            self.key = f"pod-key-renewed-{self.renewals}"
            write_key_file(self.key_file, self.key, T0 + 3600)
            return httpx.Response(200)
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.key}":
            body = {"code": 400, "type": "InvalidKeyException", "message": KEY_REFUSED}
            return httpx.Response(400, json=body)
        if request.url.path == "/ping":
            return httpx.Response(200, json={"status": "Healthy"})
        if request.content == b"input named InvalidKeyException":  # the handler's 400 quotes it
            message = "unknown input 'InvalidKeyException'; the model takes ['x']"
            return httpx.Response(400, content=error_body(400, "InvalidRequest", message))
        return httpx.Response(200, content=b"answer:" + request.content, headers={"x-ts": "1"})


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeTorchServe]]:
    fake = FakeTorchServe(tmp_path / "key_file.json")
    upstream = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    pod = PodKey(fake.key_file, "http://127.0.0.1:8081", lifetime_s=3600, client=upstream)
    await pod.load()
    app = RestRelay(
        CallerKey(_secret(tmp_path)), pod, "http://127.0.0.1:8080", upstream, max_request_bytes=64
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://relay") as client:
        yield client, fake
    await upstream.aclose()


CALLER = {"authorization": f"Bearer {SECRET}"}


async def test_predictions_are_forwarded_with_the_pods_key(
    relay: tuple[httpx.AsyncClient, FakeTorchServe],
) -> None:
    """POST /predictions/{m}/{v}: TorchServe sees the pod's key and the same path, body and content type."""
    client, fake = relay
    reply = await client.post(
        "/predictions/mlp/1?x=1", content=b"payload", headers={**CALLER, "content-type": "application/x-gwt"}
    )
    assert (reply.status_code, reply.content, reply.headers["x-ts"]) == (200, b"answer:payload", "1")
    (seen,) = fake.requests
    assert seen.url.path == "/predictions/mlp/1" and seen.url.query == b"x=1"
    assert seen.headers["authorization"] == "Bearer pod-key-1"
    assert seen.headers["content-type"] == "application/x-gwt"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong"])
async def test_a_bad_caller_key_gets_torchserves_refusal(
    relay: tuple[httpx.AsyncClient, FakeTorchServe], authorization: str | None
) -> None:
    """No key or a wrong one: 400 InvalidKeyException in TorchServe's shape; nothing reaches TorchServe."""
    client, fake = relay
    headers = {"authorization": authorization} if authorization else {}
    reply = await client.post("/predictions/mlp", content=b"x", headers=headers)
    assert reply.status_code == 400
    assert reply.json() == {"code": 400, "type": "InvalidKeyException", "message": KEY_REFUSED}
    assert fake.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/models"), ("POST", "/v2/models/mlp/infer"), ("DELETE", "/predictions/mlp"), ("GET", "/token")],
)
async def test_only_the_inference_paths_are_forwarded(
    relay: tuple[httpx.AsyncClient, FakeTorchServe], method: str, path: str
) -> None:
    """Anything but /predictions and /ping is 404, even with the key; TorchServe never sees it."""
    client, fake = relay
    reply = await client.request(method, path, headers=CALLER)
    assert reply.status_code == 404 and reply.json()["type"] == "ResourceNotFoundException"
    assert fake.requests == []


async def test_a_body_over_the_limit_is_refused(relay: tuple[httpx.AsyncClient, FakeTorchServe]) -> None:
    """Over max_request_bytes, declared or streamed: 413 before anything is forwarded."""
    client, fake = relay
    reply = await client.post("/predictions/mlp", content=b"x" * 65, headers=CALLER)
    assert reply.status_code == 413 and fake.requests == []
    assert reply.json()["type"] == "RequestEntityTooLarge" and "limit of 64 bytes" in reply.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams in
        for _ in range(3):
            yield b"x" * 30

    reply = await client.post("/predictions/mlp", content=chunks(), headers=CALLER)
    assert reply.status_code == 413 and fake.requests == []


async def test_a_refused_pod_key_is_renewed_and_the_call_retried(
    relay: tuple[httpx.AsyncClient, FakeTorchServe],
) -> None:
    """TorchServe refuses the pod's key (expired): the relay renews it and retries; the caller sees 200."""
    client, fake = relay
    fake.key = "expired-elsewhere"  # TorchServe no longer takes the key the relay holds
    reply = await client.post("/predictions/mlp", content=b"p", headers=CALLER)
    assert reply.status_code == 200 and fake.renewals == 1
    assert [r.headers["authorization"] for r in fake.requests] == [
        "Bearer pod-key-1",
        "Bearer pod-key-renewed-1",
    ]


async def test_a_handlers_400_quoting_the_refusal_is_passed_on(
    relay: tuple[httpx.AsyncClient, FakeTorchServe],
) -> None:
    """A handler's own 400 whose message quotes "InvalidKeyException" (a client's tensor name) is the
    caller's answer as TorchServe gave it: no renewal, no retry, no 503."""
    client, fake = relay
    reply = await client.post("/predictions/mlp", content=b"input named InvalidKeyException", headers=CALLER)
    assert reply.status_code == 400 and reply.json()["type"] == "InvalidRequest"
    assert fake.renewals == 0 and len(fake.requests) == 1


async def test_readiness_is_torchserves_ping_with_the_pods_key(
    relay: tuple[httpx.AsyncClient, FakeTorchServe],
) -> None:
    """/relay/ready needs no caller key and says what TorchServe's /ping says; /relay/live is always 200."""
    client, fake = relay
    assert (await client.get("/relay/ready")).json() == {"status": "Healthy"}
    assert fake.requests[-1].headers["authorization"] == "Bearer pod-key-1"
    assert (await client.get("/relay/live")).status_code == 200
    assert (await client.get("/ping")).status_code == 400  # TorchServe's /ping itself needs the key


async def test_torchserve_down_is_a_503(tmp_path: Path) -> None:
    """TorchServe not answering on loopback: 503 in TorchServe's shape, and not ready."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    key_file = tmp_path / "key_file.json"
    write_key_file(key_file, "k", T0 + 3600)
    upstream = httpx.AsyncClient(transport=httpx.MockTransport(down))
    pod = PodKey(key_file, "http://127.0.0.1:8081", lifetime_s=3600, client=upstream)
    await pod.load()
    app = RestRelay(
        CallerKey(_secret(tmp_path)), pod, "http://127.0.0.1:8080", upstream, max_request_bytes=64
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://relay") as client:
        reply = await client.post("/predictions/mlp", content=b"x", headers=CALLER)
        assert reply.status_code == 503 and reply.json()["type"] == "ServiceUnavailableException"
        assert (await client.get("/relay/ready")).status_code == 503


# --- gRPC, through real grpc.aio servers ------------------------------------------------------------------


async def test_grpc_forwards_predictions_and_refuses_a_bad_key(tmp_path: Path) -> None:
    """Predictions and Ping reach TorchServe with the pod's key, as raw bytes; a wrong caller key is
    PERMISSION_DENIED (as TorchServe); StreamPredictions2 is UNIMPLEMENTED; a refused pod key is renewed."""
    fake = FakeTorchServe(tmp_path / "key_file.json")
    seen: list[str] = []

    async def upstream_call(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        authorization = dict(context.invocation_metadata() or ()).get("authorization", "")
        seen.append(str(authorization))
        if authorization != f"Bearer {fake.key}":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, KEY_REFUSED)
        return b"reply:" + request

    handler = grpc.unary_unary_rpc_method_handler(upstream_call)
    upstream = grpc.aio.server()
    upstream.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"Predictions": handler, "Ping": handler}),)
    )
    upstream_port = upstream.add_insecure_port("127.0.0.1:0")
    await upstream.start()
    token_client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
    pod = PodKey(fake.key_file, "http://127.0.0.1:8081", lifetime_s=3600, client=token_client)
    await pod.load()
    server, port, channel = await start_grpc_relay(
        CallerKey(_secret(tmp_path)), pod, f"127.0.0.1:{upstream_port}", "127.0.0.1", 0, 1 << 20
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as client:
            predictions = client.unary_unary(SERVICE + "Predictions")
            good = (("authorization", f"Bearer {SECRET}"),)
            assert await predictions(b"abc", metadata=good, timeout=5) == b"reply:abc"
            assert await client.unary_unary(SERVICE + "Ping")(b"", metadata=good, timeout=5) == b"reply:"
            assert seen == ["Bearer pod-key-1", "Bearer pod-key-1"]
            for metadata in ((("authorization", "Bearer wrong"),), ()):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await predictions(b"abc", metadata=metadata, timeout=5)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert refused.value.details() == KEY_REFUSED
            with pytest.raises(grpc.aio.AioRpcError) as unimplemented:
                call = client.stream_stream(SERVICE + "StreamPredictions2")(
                    iter([b""]), metadata=good, timeout=5
                )
                await call.read()
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED
            fake.key = "expired-elsewhere"
            assert await predictions(b"again", metadata=good, timeout=5) == b"reply:again"
            assert fake.renewals == 1 and seen[-1] == "Bearer pod-key-renewed-1"
    finally:
        await server.stop(None)
        await channel.close()
        await upstream.stop(None)
        await token_client.aclose()
    assert json.loads(fake.key_file.read_text())["inference"]["key"] == "pod-key-renewed-1"

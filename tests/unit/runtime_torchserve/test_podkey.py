"""The relay's pod key: read from TorchServe's key file, renewed at 80 % of its lifetime and after a refusal,
against a fake token API that rewrites the file as TorchServe 0.12 does."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway.backends.credentials import parse_key_file
from runtimes.torchserve.podkey import PodKey, RenewError, renewal_due

LIFETIME_S = 3600.0
T0 = 1_750_000_000.0  # the fake wall clock's start


def _instant(epoch: float) -> str:
    """As Java's Instant.toString() writes it: nanoseconds and a Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")


def write_key_file(path: Path, inference: str, expires_at: float, api: str = "api-key") -> None:
    document = {
        "management": {"key": "mgmt", "expiration time": _instant(expires_at)},
        "inference": {"key": inference, "expiration time": _instant(expires_at)},
        "API": {"key": api},
    }
    path.write_text(json.dumps(document, indent=2))


class FakeTorchServe:
    """The token API of TorchServe 0.12: with the API key, draws a new inference key into the file."""

    def __init__(self, key_file: Path, clock: list[float]) -> None:
        self.key_file = key_file
        self.clock = clock
        self.renewals = 0
        self.seen_authorization: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/token" and request.url.params["type"] == "inference"
        self.seen_authorization.append(request.headers.get("authorization", ""))
        if request.headers.get("authorization") != "Bearer api-key":
            return httpx.Response(400, json={"code": 400, "type": "InvalidKeyException", "message": "no"})
        self.renewals += 1
        write_key_file(self.key_file, f"renewed-{self.renewals}", self.clock[0] + LIFETIME_S)
        return httpx.Response(200, content=b"")


def _pod_key(
    tmp_path: Path, clock: list[float], sleeps: list[float] | None = None
) -> tuple[PodKey, FakeTorchServe]:
    key_file = tmp_path / "key_file.json"
    fake = FakeTorchServe(key_file, clock)
    client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)
        clock[0] += seconds
        await asyncio.sleep(0)

    key = PodKey(
        key_file,
        "http://127.0.0.1:8081",
        lifetime_s=LIFETIME_S,
        client=client,
        clock=lambda: clock[0],
        sleep=sleep,
    )
    return key, fake


async def _until(condition: Callable[[], bool]) -> None:
    """Let the renewal task run (the fake sleep only yields) until `condition` holds."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the renewal task never got there")


def test_renewal_is_due_at_80_percent_of_the_lifetime() -> None:
    """Due (1 - 0.8) * lifetime before the recorded expiration; 0.8 * lifetime from now without one."""
    keys = parse_key_file(
        json.dumps(
            {
                "inference": {"key": "k", "expiration time": _instant(T0)},
                "management": {"key": "m"},
                "API": {"key": "a"},
            }
        )
    )
    assert renewal_due(keys, LIFETIME_S, now=0.0) == pytest.approx(T0 - 720.0, abs=1.0)
    unknown = parse_key_file(
        json.dumps({"inference": {"key": "k"}, "management": {"key": "m"}, "API": {"key": "a"}})
    )
    assert renewal_due(unknown, LIFETIME_S, now=100.0) == 100.0 + 2880.0


async def test_renew_uses_the_api_key_and_reads_the_new_key(tmp_path: Path) -> None:
    """renew() calls the token API with the API key and picks up the rewritten file's inference key."""
    clock = [T0]
    key, fake = _pod_key(tmp_path, clock)
    write_key_file(fake.key_file, "first", T0 + LIFETIME_S)
    assert await key.load() and key.header() == "Bearer first"
    await key.renew()
    assert key.header() == "Bearer renewed-1"
    assert fake.seen_authorization == ["Bearer api-key"]


async def test_renew_fails_loudly_when_the_token_api_refuses(tmp_path: Path) -> None:
    """A token API that refuses the API key is a RenewError; the old key stays."""
    clock = [T0]
    key, fake = _pod_key(tmp_path, clock)
    write_key_file(fake.key_file, "first", T0 + LIFETIME_S, api="stale-api-key")
    await key.load()
    with pytest.raises(RenewError, match="answered 400"):
        await key.renew()
    assert key.header() == "Bearer first"


async def test_a_burst_of_refusals_renews_once(tmp_path: Path) -> None:
    """Many calls refused with the same key: one renewal; every caller gets a key to retry with."""
    clock = [T0]
    key, fake = _pod_key(tmp_path, clock)
    write_key_file(fake.key_file, "expired", T0 - 1)
    await key.load()
    results = await asyncio.gather(*(key.recover("Bearer expired") for _ in range(5)))
    assert results == [True] * 5 and fake.renewals == 1 and key.header() == "Bearer renewed-1"


async def test_a_refusal_after_a_restart_reads_the_file_without_renewing(tmp_path: Path) -> None:
    """A restarted TorchServe wrote new keys: recover() reads them and does not call the token API."""
    clock = [T0]
    key, fake = _pod_key(tmp_path, clock)
    write_key_file(fake.key_file, "before-restart", T0 + LIFETIME_S)
    await key.load()
    write_key_file(fake.key_file, "after-restart-longer", T0 + LIFETIME_S)
    assert await key.recover("Bearer before-restart")
    assert key.header() == "Bearer after-restart-longer" and fake.renewals == 0


async def test_renewal_timer_follows_each_keys_expiration(tmp_path: Path) -> None:
    """The timer sleeps until 80 % of each key's lifetime, renews, then sleeps for the next key."""
    clock, sleeps = [T0], list[float]()
    key, fake = _pod_key(tmp_path, clock, sleeps)
    write_key_file(fake.key_file, "first", T0 + LIFETIME_S)
    task = asyncio.create_task(key.run_renewals())
    await _until(lambda: fake.renewals >= 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    timer_sleeps = [s for s in sleeps if s > 1.0]
    assert timer_sleeps[:3] == [pytest.approx(0.8 * LIFETIME_S, abs=1.0)] * 3
    assert key.header() == "Bearer renewed-3"


async def test_renewal_timer_waits_for_the_key_file(tmp_path: Path) -> None:
    """Before TorchServe writes its key file the relay has no key, and looks again every few seconds."""
    clock, sleeps = [T0], list[float]()
    key, fake = _pod_key(tmp_path, clock, sleeps)
    task = asyncio.create_task(key.run_renewals())
    await _until(lambda: len(sleeps) >= 2)
    assert key.header() == ""
    write_key_file(fake.key_file, "late", T0 + LIFETIME_S)
    await _until(lambda: bool(key.header()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert key.header() == "Bearer late" and fake.renewals == 0

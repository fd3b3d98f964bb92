"""The pod's own TorchServe inference key, for the key relay: read from `key_file.json`, renewed in time.

TorchServe 0.12 (token authorization on) draws its keys at start and writes them to `key_file.json` in
its working directory (an emptyDir the relay mounts too). The inference key expires after
`token_expiration_min`; `GET <management>/token?type=inference` with `Authorization: Bearer <API key>`
(the management API, on loopback) draws a new inference key, rewrites the whole file (not atomically:
`Files.write`, so a read may see it half-written) and answers 200 with an empty body; from then on only
the new key is accepted. So `PodKey`:
- renews on a timer, at `renew_fraction` (80 %) of the key's lifetime, counted back from the expiration
  time the file records;
- reads the file again when TorchServe refuses the key (a restarted TorchServe wrote new keys) and renews
  when the file holds nothing newer (an expired key);
- lets one caller at a time do that (`recover`), so a burst of refusals renews once.
The file is read with the project's one key-file parser, `gateway.backends.credentials.parse_key_file`.
Keys are secrets: never logged; `repr` hides them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Final

import httpx

from gateway.backends.credentials import TorchServeKeys, parse_key_file

log = logging.getLogger(__name__)

RENEW_FRACTION: Final = 0.8
RETRY_S: Final = 5.0  # after a failed renewal, and between looks for a key file not written yet
_READ_ATTEMPTS: Final = 20  # a half-written file: read again, 50 ms apart
_READ_PAUSE_S: Final = 0.05


class RenewError(Exception):
    """TorchServe's token API did not renew the inference key (the message names why, never a key)."""


def renewal_due(
    keys: TorchServeKeys, lifetime_s: float, now: float, fraction: float = RENEW_FRACTION
) -> float:
    """When (epoch seconds) to renew: `fraction` of the lifetime after the key was drawn, that is
    `(1 - fraction) * lifetime_s` before it expires; from `now` when the expiration is unknown."""
    if keys.inference_expires_at is None:
        return now + fraction * lifetime_s
    return keys.inference_expires_at - (1.0 - fraction) * lifetime_s


class PodKey:
    """The current inference key of the TorchServe beside the relay.

    Args:
        key_file: TorchServe's `key_file.json`.
        management_url: TorchServe's management API on loopback (`http://127.0.0.1:8081`).
        lifetime_s: `token_expiration_min` in seconds (TorchServe's config).
        client: The HTTP client for the token API (pooled, to loopback).
        clock: Wall-clock seconds (the key file records wall-clock instants).
        sleep: `asyncio.sleep`, or a fake.
    """

    def __init__(
        self,
        key_file: Path,
        management_url: str,
        *,
        lifetime_s: float,
        client: httpx.AsyncClient,
        renew_fraction: float = RENEW_FRACTION,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._key_file = key_file
        self._token_url = management_url.rstrip("/") + "/token"
        self._lifetime_s = lifetime_s
        self._fraction = renew_fraction
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._keys: TorchServeKeys | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PodKey({self._key_file}, <hidden>)"

    def header(self) -> str:
        """`Bearer <inference key>`, or "" before TorchServe has written its key file."""
        return f"Bearer {self._keys.inference}" if self._keys else ""

    async def load(self) -> bool:
        """Read the key file; whether the inference key changed. A missing or half-written file keeps
        the last key (a half-written one is read again a few times first)."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                keys = parse_key_file(self._key_file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return False
            except (OSError, ValueError):  # half-written by TorchServe: look again in a moment
                if attempt + 1 < _READ_ATTEMPTS:
                    await self._sleep(_READ_PAUSE_S)
                continue
            changed = self._keys is None or keys.inference != self._keys.inference
            self._keys = keys
            if changed:
                log.info(
                    "read TorchServe's inference key from %s (expires at %s)", self._key_file, _when(keys)
                )
            return changed
        log.warning("%s is not a TorchServe key file; keeping the last key", self._key_file)
        return False

    async def renew(self) -> None:
        """Draw a new inference key with the API key (TorchServe's token API), then read it; RenewError
        if TorchServe does not renew it."""
        if self._keys is None and not await self.load():
            raise RenewError(f"no key file at {self._key_file} yet")
        assert self._keys is not None
        before = self._keys.inference
        try:
            reply = await self._client.get(
                self._token_url,
                params={"type": "inference"},
                headers={"authorization": f"Bearer {self._keys.api}"},
            )
        except httpx.HTTPError as exc:
            raise RenewError(f"TorchServe's token API is not reachable ({type(exc).__name__})") from None
        if reply.status_code != 200:
            raise RenewError(f"TorchServe's token API answered {reply.status_code}")
        # TorchServe wrote the file before it answered; a read may still catch it half-written.
        for _ in range(_READ_ATTEMPTS):
            await self.load()
            if self._keys.inference != before:
                log.info("renewed TorchServe's inference key (expires at %s)", _when(self._keys))
                return
            await self._sleep(_READ_PAUSE_S)
        raise RenewError(f"TorchServe answered the renewal but {self._key_file} holds no new key")

    async def recover(self, refused: str) -> bool:
        """After TorchServe refused the key in header `refused`: read the file again (a restarted
        TorchServe) or else renew (an expired key). Whether there is a key to try again with. One
        caller at a time; those that waited find the key already replaced."""
        async with self._lock:
            if self.header() and self.header() != refused:
                return True
            if await self.load():
                return True
            try:
                await self.renew()
            except RenewError as exc:
                log.warning("TorchServe refused the pod's inference key and renewing it failed: %s", exc)
                return False
            return True

    async def attempts(self) -> AsyncIterator[str]:
        """The pod's `Authorization` value to call TorchServe with; when the caller comes back for another
        (TorchServe refused that one), the key after `recover`, once. At most two: a caller whose call
        succeeds stops asking, and one left without a key after the loop says so."""
        header = self.header()
        yield header
        if await self.recover(header):
            yield self.header()

    def next_renewal(self) -> float:
        """Wall-clock seconds of the next renewal (now when no key has been read)."""
        if self._keys is None:
            return self._clock()
        return renewal_due(self._keys, self._lifetime_s, self._clock(), self._fraction)

    async def run_renewals(self) -> None:
        """Forever: wait for the key file, then renew each key when it is due (a failed renewal is tried
        again after RETRY_S). A file rewritten meanwhile (TorchServe restarted) moves the schedule."""
        while self._keys is None and not await self.load():
            await self._sleep(RETRY_S)
        while True:
            await self._sleep(max(0.0, self.next_renewal() - self._clock()))
            async with self._lock:
                await self.load()
                if self.next_renewal() > self._clock():  # a fresher key appeared while we slept
                    continue
                try:
                    await self.renew()
                except RenewError as exc:
                    log.warning(
                        "renewing TorchServe's inference key failed: %s; again in %.0f s", exc, RETRY_S
                    )
                    failed = True
                else:
                    failed = False
            if failed:
                await self._sleep(RETRY_S)


def _when(keys: TorchServeKeys) -> str:
    if keys.inference_expires_at is None:
        return "an unknown time"
    return datetime.fromtimestamp(keys.inference_expires_at).astimezone().isoformat(timespec="seconds")

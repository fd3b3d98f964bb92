"""A backend's bearer key: given in the config, or read from a file that is re-read when it changes.

TorchServe (token authorization on, its default) wants `Authorization: Bearer <inference key>`; it
writes its keys to `key_file.json` at start and rewrites the file when a key is renewed. The file named
here is either that key file (the inference key is read from it) or a file holding the key alone (a
mounted Kubernetes Secret, which the kubelet updates in place). The file is looked at again at most once
a second, and at once when the backend refuses the key (`refresh`), so a renewed key is picked up without
a restart. A key is a secret: it is never logged, and `repr` hides it.

`parse_key_file` is the project's one reader of TorchServe's `key_file.json` (no torch, no TorchServe
needed): the gateway's `BearerKey`, the launcher (`runtimes.torchserve.launcher`) and the key relay
(`runtimes.torchserve.podkey`) all use it. TorchServe 0.12.0 writes (`TokenAuthorization.java`)::

    {"management": {"key": "...", "expiration time": "2024-10-01T12:00:00.123456789Z"},
     "inference":  {"key": "...", "expiration time": "..."},
     "API":        {"key": "..."}}
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

log = logging.getLogger(__name__)

_RECHECK_S: Final = 1.0
_NANOS: Final = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True, slots=True)
class TorchServeKeys:
    """The keys of one `key_file.json` and when the inference and management keys expire (epoch seconds;
    None when the file records no instant that can be read). Secrets: `repr` hides the keys."""

    inference: str
    management: str
    api: str
    inference_expires_at: float | None = None
    management_expires_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"TorchServeKeys(<hidden>, inference_expires_at={self.inference_expires_at}, "
            f"management_expires_at={self.management_expires_at})"
        )


def parse_key_file(text: str) -> TorchServeKeys:
    """The keys in the text of TorchServe's `key_file.json`.

    Raises:
        ValueError: The text is not (or not yet: TorchServe rewrites it in place) a key file with the
            three keys as non-empty strings. The message names no key.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("not a TorchServe key file (not JSON)") from None
    if not isinstance(document, dict):
        raise ValueError("not a TorchServe key file (not a JSON object)")
    inference = _entry(document, "inference")
    management = _entry(document, "management")
    api = _entry(document, "API")
    return TorchServeKeys(
        inference=inference["key"],
        management=management["key"],
        api=api["key"],
        inference_expires_at=_instant(inference.get("expiration time")),
        management_expires_at=_instant(management.get("expiration time")),
    )


def _entry(document: dict[str, Any], name: str) -> dict[str, Any]:
    entry = document.get(name)
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
        raise ValueError(f"not a TorchServe key file ('{name}' has no key)")
    return entry


def _instant(value: object) -> float | None:
    """Java's `Instant.toString()` (`2024-10-01T12:00:00.123456789Z`) as epoch seconds, or None."""
    if not isinstance(value, str):
        return None
    # Python parses at most microseconds: drop the nanoseconds.
    text = _NANOS.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


class BearerKey:
    """The current key toward one backend.

    Args:
        backend: The backend's name (log messages).
        key: A key given in the config ("" for none).
        path: A file to read the key from ("" for none); wins over `key` once it has been read.
        clock: Monotonic seconds.
    """

    def __init__(
        self, backend: str, *, key: str = "", path: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._backend = backend
        self._key = key
        self._path = path
        self._clock = clock
        self._checked = float("-inf")
        self._stamp: tuple[int, int] | None = None
        if path:
            self.refresh()

    def __repr__(self) -> str:
        return f"BearerKey(backend={self._backend!r}, key=<hidden>)"

    def header(self) -> str:
        """The `Authorization` value for the next call ("" when there is no key)."""
        if self._path and self._clock() - self._checked >= _RECHECK_S:
            self.refresh()
        return f"Bearer {self._key}" if self._key else ""

    def refresh(self) -> bool:
        """Read the file again if it changed; whether the key changed."""
        self._checked = self._clock()
        if not self._path:
            return False
        try:
            status = os.stat(self._path)
            stamp = (status.st_mtime_ns, status.st_size)
            if stamp == self._stamp:
                return False
            with open(self._path, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            log.warning(
                "backend '%s': cannot read its key file %s: %s", self._backend, self._path, exc.strerror
            )
            return False
        key = _key_in(text)
        if not key:  # half-written, or not a key file: keep the last good key and look again later
            log.warning("backend '%s': no inference key in %s", self._backend, self._path)
            return False
        self._stamp = stamp
        changed = key != self._key
        self._key = key
        if changed:
            log.info("backend '%s': inference key read from %s", self._backend, self._path)
        return changed


def _key_in(text: str) -> str:
    """The inference key of TorchServe's key file, or the file's text when it holds a key alone; ""
    when it is neither (half-written, say)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            return parse_key_file(stripped).inference
        except ValueError:
            return ""
    return stripped if stripped and "\n" not in stripped else ""

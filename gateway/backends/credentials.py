"""A backend's bearer key: given in the config, or read from a file that is re-read when it changes.

TorchServe (token authorization on, its default) wants `Authorization: Bearer <inference key>`; it
writes its keys to `key_file.json` at start and rewrites the file when a key is renewed. The file named
here is either that key file (the inference key is read from it) or a file holding the key alone (a
mounted Kubernetes Secret, which the kubelet updates in place). The file is looked at again at most once
a second, and at once when the backend refuses the key (`refresh`), so a renewed key is picked up without
a restart. A key is a secret: it is never logged, and `repr` hides it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

_RECHECK_S: Final = 1.0


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
    """The inference key of TorchServe's key file, or the file's text when it holds a key alone."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError:
            return ""
        entry = document.get("inference") if isinstance(document, dict) else None
        key = entry.get("key") if isinstance(entry, dict) else None
        return key if isinstance(key, str) else ""
    return stripped if stripped and "\n" not in stripped else ""

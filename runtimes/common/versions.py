"""Version directory names, as both runtimes read them from a model's base path."""

from __future__ import annotations

from typing import Final

MAX_VERSION_DIGITS: Final = 18  # below 2**63, the int64 of TF Serving's protos


def is_version_number(text: str) -> bool:
    """A positive integer in at most 18 ASCII digits ("²" and other Unicode digits pass `isdigit`, not
    `int`; a client may send a version of thousands of digits, which `int()` refuses past 4300)."""
    return len(text) <= MAX_VERSION_DIGITS and text.isascii() and text.isdigit() and int(text) >= 1

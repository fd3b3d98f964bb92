"""The bearer key toward TorchServe: from the config or a file, re-read when the file changes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.backends.credentials import BearerKey, parse_key_file


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _key_file(path: Path, inference: str) -> None:
    doc = {
        "management": {"key": "m"},
        "inference": {"key": inference, "expiration time": "x"},
        "API": {"key": "a"},
    }
    path.write_text(json.dumps(doc))


def test_reads_torchserves_key_file_and_a_bare_key(tmp_path: Path) -> None:
    """key_file.json gives its inference key; a file with the key alone (a mounted Secret) gives that."""
    _key_file(tmp_path / "key_file.json", "inf-1")
    assert BearerKey("ts", path=str(tmp_path / "key_file.json")).header() == "Bearer inf-1"
    (tmp_path / "secret").write_text("s3cret\n")
    assert BearerKey("ts", path=str(tmp_path / "secret")).header() == "Bearer s3cret"
    assert BearerKey("ts", key="inline").header() == "Bearer inline"
    assert BearerKey("ts").header() == ""


def test_a_renewed_key_is_picked_up_within_a_second(tmp_path: Path) -> None:
    """The file is looked at again at most once a second; a changed file gives the new key."""
    path = tmp_path / "key_file.json"
    _key_file(path, "old")
    clock = Clock()
    key = BearerKey("ts", path=str(path), clock=clock)
    _key_file(path, "renewed-key")  # a different size: the stamp changes even within one mtime tick
    assert key.header() == "Bearer old"  # not looked at again yet
    clock.now = 1.5
    assert key.header() == "Bearer renewed-key"


def test_refresh_reads_at_once_and_keeps_the_last_good_key(tmp_path: Path) -> None:
    """`refresh` (after a refusal) reads now; a half-written or missing file keeps the key in use."""
    path = tmp_path / "key_file.json"
    _key_file(path, "first")
    key = BearerKey("ts", path=str(path), clock=Clock())
    _key_file(path, "second-key")
    assert key.refresh() is True and key.header() == "Bearer second-key"
    assert key.refresh() is False  # unchanged
    path.write_text('{"inference": ')  # half-written
    os.utime(path, ns=(1, 1))
    assert key.refresh() is False and key.header() == "Bearer second-key"
    path.unlink()
    assert key.refresh() is False and key.header() == "Bearer second-key"


def test_the_key_never_shows_in_repr(tmp_path: Path) -> None:
    """A key is a secret: repr names the backend only."""
    assert "s3cret" not in repr(BearerKey("ts", key="s3cret"))


def test_key_file_parses_javas_instants_and_hides_keys() -> None:
    """The three keys and both expirations (Java's nanoseconds dropped; None when unreadable); repr shows no
    key."""
    keys = parse_key_file(
        json.dumps(
            {
                "management": {"key": "s3cret-m", "expiration time": "2025-06-15T13:00:00Z"},
                "inference": {"key": "s3cret-i", "expiration time": "2025-06-15T12:00:00.123456789Z"},
                "API": {"key": "s3cret-a"},
            }
        )
    )
    assert (keys.inference, keys.management, keys.api) == ("s3cret-i", "s3cret-m", "s3cret-a")
    assert keys.inference_expires_at == datetime(2025, 6, 15, 12, 0, 0, 123456, UTC).timestamp()
    assert keys.management_expires_at == datetime(2025, 6, 15, 13, tzinfo=UTC).timestamp()
    assert "s3cret" not in repr(keys) and "s3cret" not in str(keys)
    unknown = parse_key_file(
        '{"management": {"key": "m", "expiration time": "soon"},'
        ' "inference": {"key": "i"}, "API": {"key": "a"}}'
    )
    assert (unknown.inference_expires_at, unknown.management_expires_at) == (None, None)


@pytest.mark.parametrize(
    "text",
    [
        '{"inference": {"key": "x"}',  # half-written
        "{}",
        "[]",
        '{"inference": {"key": "i"}, "API": {"key": "a"}}',  # no management key
        '{"inference": "x", "management": {"key": "m"}, "API": {"key": "a"}}',
        '{"inference": {"key": ""}, "management": {"key": "m"}, "API": {"key": "a"}}',
        '{"inference": {"key": 7}, "management": {"key": "m"}, "API": {"key": "a"}}',
        '{"inference": {"key": "s3cret"}, "management": {"key": "m"}, "API": {"key": null}}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_key_file_parsing_is_strict(text: str) -> None:
    """Anything but the three keys as non-empty strings is not a key file (ValueError naming no key); the
    BearerKey then finds no key in it."""
    with pytest.raises(ValueError, match="not a TorchServe key file") as caught:
        parse_key_file(text)
    assert "s3cret" not in str(caught.value)

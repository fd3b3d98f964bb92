"""Logging set-up: per-call library loggers stay quiet at the default level."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from gateway.logs import QUIET_LIBRARIES, configure_logging


@pytest.fixture(autouse=True)
def _restore_levels() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level", ["info", "INFO", logging.INFO, "warning"])
def test_httpx_request_lines_are_not_logged_at_info(level: int | str) -> None:
    """At INFO (the default) httpx's per-request "HTTP Request: POST ..." line is not emitted."""
    configure_logging(level)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)


def test_debug_shows_library_logs() -> None:
    """An operator asking for DEBUG sees the libraries' lines too."""
    configure_logging("debug")
    assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)


def test_unknown_level_is_refused() -> None:
    """A level name logging does not know is a ValueError naming it."""
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("loud")

"""Logging set-up shared by the gateway, its workers and the JAX runtime.

Libraries on the request path log per call at INFO (httpx writes "HTTP Request: POST ..." for every
backend call): at the default level that is one line per inference in production. Their loggers are held
at WARNING unless the operator asks for DEBUG, which shows everything.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

QUIET_LIBRARIES: Final = ("httpx", "httpcore")
FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int | str, fmt: str = FORMAT) -> None:
    """Log to stderr at `level` (a number or a name such as "info"); per-call library loggers stay at
    WARNING unless `level` is DEBUG."""
    if isinstance(level, str):
        number = logging.getLevelName(level.upper())
        if not isinstance(number, int):
            raise ValueError(f"unknown log level '{level.upper()}'")
        level = number
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)

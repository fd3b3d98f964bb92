"""Per-request cost of the REST listener alone, in-process (no sockets, no backend).

    .venv/bin/python bench/rest_listener.py [--requests 5000]

Drives the ASGI app from `gateway.api.rest.app.create_app` directly with a small JSON infer request over
a stub server that answers at once, so the figure is the listener's own work: routing, reading the body,
decoding, encoding, error plumbing. Measured 2026-11-25 on the 2-core development machine, three runs
each: 128-133 µs a request with FastAPI's routes, 68-103 µs (typically about 70) after moving the model
endpoints to plain Starlette routes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.api.rest.app import create_app
from tests.unit.api.fakes import FakeServer  # the unit tests' stub InferenceServer: answers at once

BODY = orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1, 2]}]})


async def _one(app: Any) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v2/models/m/infer", "raw_path": b"/v2/models/m/infer",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
    }  # fmt: skip
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    if status != [200]:
        raise SystemExit(f"unexpected status {status}")


async def main(requests: int) -> None:
    app = create_app(FakeServer())
    for _ in range(500):
        await _one(app)
    start = time.perf_counter()
    for _ in range(requests):
        await _one(app)
    print(f"REST listener: {(time.perf_counter() - start) / requests * 1e6:.1f} µs a request")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    asyncio.run(main(parser.parse_args().requests))

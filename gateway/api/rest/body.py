"""Reading a REST request's body within the listener's limits: shared by the OIP and TF Serving fronts.

The size limit holds for the body as sent and, when it is compressed (`Content-Encoding: gzip` or
`deflate`, as Triton accepts and tritonclient's `request_compression_algorithm` sends), as decoded too.
"""

from __future__ import annotations

import zlib
from typing import Final

from starlette.requests import ClientDisconnect, Request

from gateway.errors import ErrorCode, GatewayError, InvalidRequest, PayloadTooLarge

# The request Content-Encodings accepted: the zlib window bits that decode each.
_DECODERS: Final[dict[str, int]] = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` before reading more than that."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; not an error of ours, so no traceback in the log.
        raise GatewayError("client disconnected while sending the body", code=ErrorCode.CANCELLED) from None
    return b"".join(chunks)


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its Content-Encoding undone; the decoded size is held to `limit` as well."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    wbits = _DECODERS.get(name)
    if wbits is None:
        raise InvalidRequest(f"unsupported Content-Encoding '{name[:32]}' (use gzip, deflate or none)")
    decoder = zlib.decompressobj(wbits)
    try:
        decoded = decoder.decompress(body, limit + 1)  # stops early: a small bomb cannot grow large
    except zlib.error:
        raise InvalidRequest(f"request body is not valid {name} data") from None
    if len(decoded) > limit:
        raise PayloadTooLarge(f"decoded request body exceeds the limit of {limit} bytes")
    if not decoder.eof:
        raise InvalidRequest(f"request body is truncated {name} data")
    return decoded

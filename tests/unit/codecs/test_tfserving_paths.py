"""TF Serving's REST paths, parsed as `http_rest_api_util.cc` matches them."""

from __future__ import annotations

import pytest

from gateway.codecs.tfserving.paths import METADATA, STATUS, RestPath, parse

PATHS: list[tuple[str, str, RestPath | None]] = [
    ("POST", "/v1/models/m:predict", RestPath("m", "", "", "predict")),
    ("POST", "/V1/MODELS/m/versions/3:Classify", RestPath("m", "3", "", "classify")),
    ("POST", "/v1/models/m/labels/stable_2:regress", RestPath("m", "", "stable_2", "regress")),
    ("GET", "/v1/models/m", RestPath("m", "", "", STATUS)),
    ("GET", "/v1/models/m/versions/7/metadata", RestPath("m", "7", "", METADATA)),
    ("GET", "/v1/models", RestPath("", "", "", STATUS)),
    ("GET", "/v1/models/m:predict", None),
    ("POST", "/v1/models/m", None),
    ("GET", "/v1/models/m/versions/one", None),
    ("GET", "/v1/models/m/labels/a-b", None),
    ("PUT", "/v1/models/m", None),
]


@pytest.mark.parametrize(("method", "path", "expected"), PATHS, ids=[f"{m} {p}" for m, p, _ in PATHS])
def test_parse(method: str, path: str, expected: RestPath | None) -> None:
    """Case-insensitive, versions digits only, labels [A-Za-z0-9_]+, anything else None (malformed)."""
    assert parse(method, path) == expected
    if expected is not None:
        assert expected.version == (expected.number or expected.label)

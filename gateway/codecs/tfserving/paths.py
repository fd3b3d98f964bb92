"""TF Serving's REST paths (PROTOCOLS §1.2): the one definition of its patterns, for the gateway's front
and for anything else that serves or parses them (no web framework is imported here).

The patterns are TF Serving's own (`http_rest_api_util.cc`): matched case-insensitively, a version is
`\\d+`. Labels are narrowed to `[A-Za-z0-9_]+`, the alphabet TF Serving's config allows, so that a bad
label is a malformed path rather than an unknown label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

PREFIX: Final = re.compile(r"/v1/", re.IGNORECASE)
"""Every path TF Serving's REST API owns starts with this (a `match`, not a `fullmatch`)."""
_VERSION: Final = r"(?:/versions/(\d+)|/labels/([A-Za-z0-9_]+))?"
POST: Final = re.compile(rf"/v1/models/([^/:]+){_VERSION}:(classify|regress|predict)", re.IGNORECASE)
"""`POST /v1/models/{m}[/versions/{v}|/labels/{l}]:{verb}`; groups: model, number, label, verb."""
GET: Final = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION}(/metadata)?", re.IGNORECASE)
"""`GET /v1/models[/{m}][/versions/{v}|/labels/{l}][/metadata]`; groups: model (None when absent,
which TF Serving answers "Missing model name in request."), number, label, "/metadata"."""

METADATA: Final = "metadata"
STATUS: Final = "status"


@dataclass(frozen=True, slots=True)
class RestPath:
    """A path TF Serving's REST API takes.

    Attributes:
        model: The model's name; "" only for a GET that names none (`/v1/models`).
        number: The version number's digits, or "".
        label: The version label, or "".
        verb: For POST the call, lowercased: "predict", "classify" or "regress"; for GET `METADATA`
            or `STATUS`.
    """

    model: str
    number: str
    label: str
    verb: str

    @property
    def version(self) -> str:
        """The version as one string: the number, else the label, else "" (any)."""
        return self.number or self.label


def parse(method: str, path: str) -> RestPath | None:
    """The call a method and path name, as TF Serving matches them; None for anything else (TF
    Serving's `Malformed request`)."""
    if method == "POST" and (match := POST.fullmatch(path)):
        model, number, label, verb = match.groups()
        return RestPath(model, number or "", label or "", verb.lower())
    if method == "GET" and (match := GET.fullmatch(path)):
        model, number, label, metadata = match.groups()
        return RestPath(model or "", number or "", label or "", METADATA if metadata else STATUS)
    return None

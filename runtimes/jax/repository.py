"""The model repository on disk and which of its versions to serve.

Layout::

    <root>/<model>/model.json            optional: {"version_policy": "latest:2" | "all" | "specific:1,3"}
    <root>/<model>/<version>/config.json  tensor signature and batching (see `config.py`)
    <root>/<model>/<version>/model.jaxexport  serialized `jax.export` artifact
    <root>/<model>/<version>/weights.npz  the params pytree, keyed by key path

Versions are positive integers. Names starting with "." are ignored (export stages there), and so is a
version directory that lacks one of the three files: it is still being copied in.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigError
from runtimes.common.versions import is_version_number

__all__ = ["is_version_number"]  # the JAX manager reads it from here

CONFIG_FILE: Final = "config.json"
EXPORTED_FILE: Final = "model.jaxexport"
WEIGHTS_FILE: Final = "weights.npz"
MODEL_FILE: Final = "model.json"
VERSION_FILES: Final = (CONFIG_FILE, EXPORTED_FILE, WEIGHTS_FILE)

# (file name, size, mtime in ns) of each version file: changes whenever a file is replaced.
Fingerprint = tuple[tuple[str, int, int], ...]

_log = logging.getLogger(__name__)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions of a model to serve: the `latest` N, `all`, or a `specific` set (as Triton's)."""

    kind: str
    count: int = 1
    versions: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Parses "latest:N" (or "latest", N=1), "all", or "specific:1,2,3"."""
        kind, _, arg = text.strip().partition(":")
        try:
            if kind == "all" and not arg:
                return cls("all")
            if kind == "latest":
                count = int(arg) if arg else 1
                if count >= 1:
                    return cls("latest", count=count)
            if kind == "specific" and arg:
                versions = frozenset(int(v) for v in arg.split(","))
                if all(v >= 1 for v in versions):
                    return cls("specific", versions=versions)
        except ValueError:
            pass
        raise ValueError(f"invalid version policy {text!r}: expected latest:N, all or specific:V1,V2,...")

    @classmethod
    def from_json(cls, value: Any) -> VersionPolicy:
        """Accepts the string form or an object: {"latest": N}, {"all": true}, {"specific": [1, 2]}."""
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, dict) and len(value) == 1:
            ((kind, arg),) = value.items()
            if kind == "all" and arg is True:
                return cls("all")
            if kind == "latest" and isinstance(arg, int) and not isinstance(arg, bool):
                return cls.parse(f"latest:{arg}")
            if kind == "specific" and isinstance(arg, list) and arg:
                return cls.parse("specific:" + ",".join(str(v) for v in arg))
        raise ValueError(f"invalid version policy {json.dumps(value)}")

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve among those present on disk."""
        present = set(available)
        if self.kind == "all":
            return present
        if self.kind == "latest":
            return set(sorted(present)[-self.count :])
        return present & self.versions

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        if self.kind == "specific":
            return "specific:" + ",".join(str(v) for v in sorted(self.versions))
        return self.kind


DEFAULT_POLICY: Final = VersionPolicy("latest", count=1)


@dataclass(frozen=True, slots=True)
class VersionDir:
    """A complete version directory; `fingerprint` changes whenever one of its files is replaced."""

    model: str
    version: int
    path: Path
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class ModelDir:
    name: str
    policy: VersionPolicy | None
    versions: dict[int, VersionDir]


def scan(root: Path, *, skipped: set[str] | None = None) -> dict[str, ModelDir]:
    """Reads the repository. A model with a broken `model.json` is logged and skipped, not fatal.

    The names of the models skipped that way are added to `skipped`, when given: such a model is not
    gone (its `model.json` may be mid-write or have a typo), so what serves it should stay as it is.
    """
    models: dict[str, ModelDir] = {}
    if not root.is_dir():
        _log.warning("model repository %s does not exist", root)
        return models
    for model_path in sorted(root.iterdir()):
        name = model_path.name
        if not model_path.is_dir() or not _MODEL_NAME.match(name):
            continue
        try:
            policy = read_policy(model_path / MODEL_FILE)
        except ConfigError as exc:
            _log.error("skipping model %s: %s", name, exc)
            if skipped is not None:
                skipped.add(name)
            continue
        versions = {}
        for version_path in model_path.iterdir():
            if version_path.is_dir() and is_version_number(version_path.name):
                found = _version_dir(name, int(version_path.name), version_path)
                if found is not None:
                    versions[found.version] = found
        models[name] = ModelDir(name, policy, versions)
    return models


def read_policy(path: Path) -> VersionPolicy | None:
    """The policy in a model's `model.json`, or None where the file is absent (the default applies)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"version_policy"}:
        raise ConfigError(f"{path}: expected an object with the one key 'version_policy'")
    if "version_policy" not in data:
        return None
    try:
        return VersionPolicy.from_json(data["version_policy"])
    except ValueError as exc:
        raise ConfigError(f"{path}: 'version_policy': {exc}") from None


def _version_dir(model: str, version: int, path: Path) -> VersionDir | None:
    fingerprint = []
    for name in VERSION_FILES:
        try:
            stat = (path / name).stat()
        except OSError:
            return None
        fingerprint.append((name, stat.st_size, stat.st_mtime_ns))
    return VersionDir(model, version, path, tuple(fingerprint))

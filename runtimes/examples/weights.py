"""Weight files: an example model's nested weights as one flat `.npz`, written once and read by each
framework's exporter.

Keys are the path to each array, `/`-separated, list positions as numbers (`layers/0/qkv`), so the file is
readable with nothing but numpy and maps back to the same nesting of dicts and lists.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from runtimes.examples.specs import SPECS, Params

_SEP = "/"


def weights_path(directory: Path, name: str) -> Path:
    """Where the weights of example model `name` live in `directory`."""
    return directory / f"{name}.npz"


def ensure_weights(directory: Path, name: str, seed: int = 0) -> Path:
    """The weight file of example model `name`, drawn from `seed` and written if it is not there yet.

    Written to a temporary name and renamed, so two exporters started at once never read half a file.
    """
    path = weights_path(directory, name)
    if not path.exists():
        params, _ = SPECS[name].draw(seed)
        save_weights(path, params)
    return path


def example_params(name: str, weights: Path | None) -> Params:
    """Example model `name`'s weights: from the weight file in directory `weights` (`ensure_weights`
    writes it there from seed 0 if missing), or drawn from seed 0 when `weights` is None."""
    return SPECS[name].draw(0)[0] if weights is None else load_weights(ensure_weights(weights, name))


def save_weights(path: Path, params: Params) -> None:
    """Writes `params` (nested dicts and lists of arrays) to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            np.savez(stream, **_flatten(params, ""))  # type: ignore[arg-type]
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def load_weights(path: Path) -> Params:
    """The nested weights `save_weights` wrote; a level whose keys are 0..n-1 comes back as a list."""
    with np.load(path, allow_pickle=False) as archive:
        tree: dict[str, Any] = {}
        for key in archive.files:
            *parents, leaf = key.split(_SEP)
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = archive[key]
    restored = _lists(tree)
    assert isinstance(restored, dict)
    return restored


def _flatten(node: Any, prefix: str) -> dict[str, np.ndarray]:
    if isinstance(node, dict):
        items = [(str(key), value) for key, value in node.items()]
    elif isinstance(node, (list, tuple)):
        items = [(str(index), value) for index, value in enumerate(node)]
    else:
        return {prefix: np.asarray(node)}
    flat: dict[str, np.ndarray] = {}
    for key, value in items:
        if not key or _SEP in key:
            raise ValueError(f"weight key {key!r} under {prefix!r} is empty or contains {_SEP!r}")
        flat.update(_flatten(value, f"{prefix}{_SEP}{key}" if prefix else key))
    return flat


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    children = {key: _lists(value) for key, value in node.items()}
    if children and sorted(children) == sorted(str(i) for i in range(len(children))):
        return [children[str(i)] for i in range(len(children))]
    return children

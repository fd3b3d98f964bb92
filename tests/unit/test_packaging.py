"""The gateway's install stays free of ML frameworks: its image must stay small."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("jax", "jaxlib", "tensorflow", "tensorflow-cpu", "torch", "flax")


def _name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop, 1)[0]
    return requirement.strip().lower()


def test_gateway_dependencies_exclude_frameworks() -> None:
    """`pip install .` (no extras) asks for no TensorFlow, PyTorch or JAX."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert names.isdisjoint(FRAMEWORKS), names & set(FRAMEWORKS)


def test_gateway_modules_import_no_framework() -> None:
    """Importing every gateway module (app, CLI, listeners, backends) loads no ML framework."""
    code = (
        "import sys, pkgutil, importlib, gateway\n"
        "for m in pkgutil.walk_packages(gateway.__path__, 'gateway.'):\n"
        "    importlib.import_module(m.name)\n"
        f"loaded = sorted(n for n in {FRAMEWORKS!r} if n in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""

"""What the comparison ran on: cores, Python, package versions, Java (TorchServe's frontend)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from typing import Any

PACKAGES = (
    "serving-gateway",
    "jax",
    "jaxlib",
    "tensorflow-cpu",
    "tensorflow",
    "torch",
    "torchserve",
    "grpcio",
    "numpy",
    "matplotlib",
)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _java() -> str | None:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[0] if lines else None


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "python": platform.python_version(),
        "java": _java(),
        "packages": {name: v for name in PACKAGES if (v := _version(name)) is not None},
    }

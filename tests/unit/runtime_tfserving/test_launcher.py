"""The launcher: the real tensorflow_model_server when on PATH, this runtime otherwise, same flags."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtimes.tfserving import launcher


def test_falls_back_to_this_runtime_with_the_same_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the binary: `python -m runtimes.tfserving` and its ready-line prefix."""
    monkeypatch.setattr(launcher.shutil, "which", lambda name: None)
    command = launcher.tfserving_command(
        grpc_port=0, rest_port=0, model_name="m", model_base_path=Path("/models/m"), enable_batching=True
    )
    assert command.argv == [
        sys.executable,
        "-m",
        "runtimes.tfserving",
        "--port=0",
        "--rest_api_port=0",
        "--model_name=m",
        "--model_base_path=/models/m",
        "--enable_batching=true",
    ]
    assert not command.real_binary and command.ready_prefix == launcher.RUNTIME_READY_PREFIX


def test_prefers_the_real_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    """With tensorflow_model_server on PATH: it, with the flags unchanged and its own ready line."""
    monkeypatch.setattr(launcher.shutil, "which", lambda name: f"/usr/bin/{name}")
    command = launcher.tfserving_command(grpc_port=8500, model_config_file=Path("/m.config"))
    assert command.argv == [
        "/usr/bin/tensorflow_model_server",
        "--port=8500",
        "--model_config_file=/m.config",
    ]
    assert command.real_binary and command.ready_prefix == launcher.BINARY_READY_GRPC


def test_needs_exactly_one_model_source() -> None:
    """A config file or a base path, not both and not neither."""
    with pytest.raises(ValueError, match="not both"):
        launcher.tfserving_command(grpc_port=1)

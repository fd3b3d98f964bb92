"""config.properties and the launcher command carry the project's security and placement defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtimes.torchserve.config import ModelEntry, TorchServeConfig, render
from runtimes.torchserve.launcher import read_keys, torchserve_command


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_security_defaults(tmp_path: Path) -> None:
    """Token auth on, management on loopback, model API and per-model pip off, prometheus metrics."""
    config = TorchServeConfig(
        tmp_path,
        (ModelEntry("mlp", "mlp.mar", batch_size=8, max_batch_delay_ms=3),),
        inference_host="0.0.0.0",
        heap_mb=200,
    )
    props = _props(render(config))
    assert props["disable_token_authorization"] == "false" and props["enable_model_api"] == "false"
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["grpc_management_address"] == "127.0.0.1"
    assert props["inference_address"] == "http://0.0.0.0:8080"
    assert props["install_py_dep_per_model"] == "false" and props["metrics_mode"] == "prometheus"
    assert props["vmargs"].startswith("-Xmx200m") and props["default_workers_per_model"] == "1"
    assert props["load_models"] == "mlp=mlp.mar"
    model = json.loads(props["models"])["mlp"]["1"]
    assert (model["batchSize"], model["maxBatchDelay"], model["minWorkers"], model["maxWorkers"]) == (
        8,
        3,
        1,
        1,
    )


def test_command_keeps_everything_under_the_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logs, temp files and the key file land in the workdir; TS_CONFIG_FILE cannot override the config."""
    monkeypatch.setenv("TS_CONFIG_FILE", "/elsewhere")
    command = torchserve_command(TorchServeConfig(tmp_path / "store", ()), tmp_path / "work")
    work = (tmp_path / "work").resolve()
    assert command.argv[1:6] == ["-m", "ts.model_server", "--start", "--foreground", "--ncs"]
    assert command.cwd == work and command.key_file == work / "key_file.json"
    assert command.env["LOG_LOCATION"] == str(work / "logs") and command.env["TEMP"] == str(work / "tmp")
    assert command.env["TMPDIR"] == command.env["TEMP"] and "TS_CONFIG_FILE" not in command.env
    assert command.config_file.read_text() == render(TorchServeConfig(tmp_path / "store", ()))


def test_read_keys(tmp_path: Path) -> None:
    """The inference, management and API keys are read from key_file.json and never shown in repr."""
    path = tmp_path / "key_file.json"
    path.write_text(
        json.dumps(
            {
                "management": {"key": "s3cret-m", "expiration time": "t"},
                "inference": {"key": "s3cret-i", "expiration time": "t"},
                "API": {"key": "s3cret-a"},
            }
        )
    )
    keys = read_keys(path)
    assert (keys.inference, keys.management, keys.api) == ("s3cret-i", "s3cret-m", "s3cret-a")
    assert "s3cret" not in repr(keys)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a TorchServe key file"):
        read_keys(path)


def test_a_relative_model_store_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TorchServe runs from the workdir, so `make up`'s relative `.local/torchserve-models` must reach it
    absolute, in the argv and in the config file."""
    monkeypatch.chdir(tmp_path)
    command = torchserve_command(TorchServeConfig(Path(".local/store"), ()), Path(".local/work"))
    store = str(tmp_path.resolve() / ".local" / "store")
    assert command.argv[command.argv.index("--model-store") + 1] == store
    assert f"model_store={store}" in command.config_file.read_text()

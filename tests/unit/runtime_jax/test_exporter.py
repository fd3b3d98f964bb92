"""`runtimes.jax.export` round trips: what is exported and loaded back computes what the function does."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from gateway.errors import ConfigError
from runtimes.examples import SPECS, sample_inputs
from runtimes.jax import ExportError, export
from runtimes.jax.compiled import CompiledModel
from runtimes.jax.examples import ExampleModel
from runtimes.jax.repository import CONFIG_FILE, EXPORTED_FILE, WEIGHTS_FILE
from tests.unit.runtime_jax.conftest import MAX_BATCH


@pytest.mark.parametrize("name", ["cnn", "transformer", "mlp"])
def test_exported_example_matches_direct_call(
    name: str, compiled: dict[str, CompiledModel], examples: dict[str, ExampleModel]
) -> None:
    """Each bucket's executable, loaded from disk, gives what calling the function directly gives."""
    example = examples[name]
    replica = compiled[name].replicas[0]
    (x,) = sample_inputs(SPECS[name], np.random.default_rng(1), 4)
    # Rows are independent, so one jitted reference call covers every bucket's rows.
    want = np.asarray(jax.jit(example.fn)(example.params, x))
    for bucket in (1, 2, 4):
        (got,) = replica.run([x[:bucket]])
        np.testing.assert_allclose(got, want[:bucket], rtol=1e-5, atol=1e-6)


def test_one_replica_serves_two_instances_at_once(compiled: dict[str, CompiledModel]) -> None:
    """Instances share a replica's executables and weights: runs from several threads at once give the
    answers the same runs give one at a time."""
    replica = compiled["cnn"].replicas[0]
    batches = [np.random.default_rng(seed).random((4, 28, 28, 1), dtype=np.float32) for seed in range(8)]
    alone = [replica.run([x])[0] for x in batches]
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(lambda x: replica.run([x])[0], batches))
    for got, want in zip(together, alone, strict=True):
        np.testing.assert_array_equal(got, want)


def test_export_writes_layout_and_config(example_repo: Path) -> None:
    """A version directory holds the three files; the config has names, OIP types, -1 batch, buckets."""
    version = example_repo / "transformer" / "1"
    assert sorted(p.name for p in version.iterdir()) == sorted([CONFIG_FILE, EXPORTED_FILE, WEIGHTS_FILE])
    config = json.loads((version / CONFIG_FILE).read_text())
    assert config["inputs"] == [{"name": "tokens", "datatype": "INT32", "shape": [-1, 16]}]
    assert config["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 32]}]
    assert config["batching"]["max_batch_size"] == MAX_BATCH
    assert config["batching"]["batch_buckets"] == [1, 2, 4]
    assert config["platform"] == "jax_xla"
    assert config["instances_per_device"] == 1
    assert config["batching"]["dispatch_when_idle"] is True
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_compile_time_recorded_per_bucket(compiled: dict[str, CompiledModel]) -> None:
    """Loading compiles one executable per bucket and records how long each took."""
    assert sorted(compiled["cnn"].compile_seconds) == [1, 2, 4]
    assert all(seconds > 0 for seconds in compiled["cnn"].compile_seconds.values())


def _two_heads(params: dict[str, Any], x: jax.Array, scale: jax.Array) -> dict[str, jax.Array]:
    h = x @ params["w"]
    return {"sum": h.sum(axis=1) * scale[:, 0], "hidden": h}


def test_dict_outputs_follow_output_names_and_multiple_inputs(tmp_path: Path) -> None:
    """A dict-returning model with two inputs exports its outputs in output_names order."""
    params = {"w": np.arange(6, dtype=np.float32).reshape(3, 2)}
    examples = {"x": np.ones((1, 3), np.float32), "scale": np.ones((1, 1), np.float32)}
    path = export(
        _two_heads, params, examples, tmp_path / "m" / "1",
        input_names=["x", "scale"], output_names=["hidden", "sum"], max_batch_size=2, platforms=None,
    )  # fmt: skip
    model = CompiledModel.load(path)
    assert [o.name for o in model.config.outputs] == ["hidden", "sum"]
    assert model.config.outputs[1].shape == (-1,)
    x = np.array([[1, 0, 0], [0, 1, 1]], np.float32)
    scale = np.array([[1], [10]], np.float32)
    hidden, total = model.replicas[0].run([x, scale])
    np.testing.assert_allclose(hidden, x @ params["w"])
    np.testing.assert_allclose(total, (x @ params["w"]).sum(axis=1) * scale[:, 0])
    model.close()


def _bf16_model(params: dict[str, Any], x: jax.Array) -> jax.Array:
    return (x * params["w"]).astype(jnp.bfloat16)


def test_bfloat16_weights_and_tensors_round_trip(tmp_path: Path) -> None:
    """bfloat16 weights survive the .npz (stored as bits) and BF16 inputs/outputs keep their type."""
    params = {"w": np.array([0.5, 2.0, -1.0], ml_dtypes.bfloat16)}
    path = export(
        _bf16_model, params, [np.zeros((1, 3), ml_dtypes.bfloat16)], tmp_path / "bf" / "1",
        input_names=["x"], output_names=["y"], max_batch_size=1, platforms=None,
    )  # fmt: skip
    model = CompiledModel.load(path)
    assert model.config.inputs[0].datatype == "BF16"
    assert model.config.outputs[0].datatype == "BF16"
    (y,) = model.replicas[0].run([np.array([[2, 2, 2]], ml_dtypes.bfloat16)])
    np.testing.assert_array_equal(y.astype(np.float32), [[1.0, 4.0, -2.0]])
    model.close()


def _no_batch_output(params: Any, x: jax.Array) -> jax.Array:
    return x.sum()


def _identity(params: Any, x: jax.Array) -> jax.Array:
    return x


@pytest.mark.parametrize(
    ("fn", "kwargs", "message"),
    [
        (_no_batch_output, {}, "output 'y' has shape"),
        (_identity, {"output_names": ["y", "z"]}, "one output for 2 output names"),
        (_identity, {"input_names": ["x", "x"]}, "input_names must be non-empty and unique"),
        (_identity, {"output_names": ["x"]}, "input and output names must differ"),
        (_identity, {"input_names": ["a", "b"]}, "1 example inputs for 2 input names"),
    ],
)
def test_export_rejects_unbatched_or_misnamed_models(
    tmp_path: Path, fn: Any, kwargs: dict[str, Any], message: str
) -> None:
    """Export fails with a message naming the tensor or argument at fault, and leaves nothing behind."""
    args: dict[str, Any] = {"input_names": ["x"], "output_names": ["y"], "platforms": None} | kwargs
    with pytest.raises(ExportError, match=message):
        export(fn, {}, [np.zeros((1, 3), np.float32)], tmp_path / "m" / "1", **args)
    assert not (tmp_path / "m" / "1").exists()


def test_export_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    """An existing version is never replaced by accident; overwrite=True replaces it."""
    args: dict[str, Any] = {"input_names": ["x"], "output_names": ["y"], "platforms": None}
    export(_identity, {}, [np.zeros((1, 2), np.float32)], tmp_path / "1", **args)
    with pytest.raises(FileExistsError):
        export(_identity, {}, [np.zeros((1, 2), np.float32)], tmp_path / "1", **args)
    export(_identity, {}, [np.zeros((1, 5), np.float32)], tmp_path / "1", overwrite=True, **args)
    assert '"shape": [-1, 5]' in (tmp_path / "1" / CONFIG_FILE).read_text()


def test_load_refuses_weights_that_do_not_match(tmp_path: Path) -> None:
    """Weights missing a parameter, or with the wrong shape, fail the load with a ConfigError."""
    params = {"w": np.ones((3, 2), np.float32)}
    args: dict[str, Any] = {"input_names": ["x"], "output_names": ["y"], "platforms": None}
    path = export(lambda p, x: x @ p["w"], params, [np.zeros((1, 3), np.float32)], tmp_path / "1", **args)
    np.savez(path / WEIGHTS_FILE, **{"['w']": np.ones((2, 2), np.float32)})
    with pytest.raises(ConfigError, match=r"weight '\['w'\]' is float32\[2, 2\]"):
        CompiledModel.load(path)
    np.savez(path / WEIGHTS_FILE, **{"['v']": np.ones((3, 2), np.float32)})
    with pytest.raises(ConfigError, match="not a parameter of the exported model"):
        CompiledModel.load(path)


@pytest.mark.parametrize("params", [{}, None])
def test_model_without_weights_loads_and_runs(tmp_path: Path, params: Any) -> None:
    """A weight-free model (params {} or None) loads and runs, called with the params it was exported with."""
    args: dict[str, Any] = {"input_names": ["x"], "output_names": ["y"], "platforms": None}
    path = export(_identity, params, [np.zeros((1, 3), np.float32)], tmp_path / "1", max_batch_size=1, **args)
    model = CompiledModel.load(path)
    (y,) = model.replicas[0].run([np.full((1, 3), 7, np.float32)])
    np.testing.assert_array_equal(y, [[7, 7, 7]])
    model.close()


def test_load_refuses_truncated_weights_with_a_config_error(tmp_path: Path) -> None:
    """A weights file caught mid-copy fails the load with a ConfigError naming it, not a zipfile error."""
    args: dict[str, Any] = {"input_names": ["x"], "output_names": ["y"], "platforms": None}
    params = {"w": np.ones((3, 2), np.float32)}
    path = export(lambda p, x: x @ p["w"], params, [np.zeros((1, 3), np.float32)], tmp_path / "1", **args)
    weights = path / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ConfigError, match=r"weights\.npz: cannot read weights"):
        CompiledModel.load(path)


def test_load_refuses_config_that_disagrees_with_artifact(tmp_path: Path) -> None:
    """A hand-edited config whose shapes differ from the exported model fails at load, not per request."""
    args: dict[str, Any] = {"input_names": ["x"], "output_names": ["y"], "platforms": None}
    path = export(_identity, {}, [np.zeros((1, 3), np.float32)], tmp_path / "1", **args)
    text = (path / CONFIG_FILE).read_text().replace("[-1, 3]", "[-1, 4]", 1)
    (path / CONFIG_FILE).write_text(text)
    with pytest.raises(ConfigError, match="input 'x' is FP32 \\[-1, 4\\] in the config"):
        CompiledModel.load(path)

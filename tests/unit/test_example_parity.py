"""The example models in TensorFlow (SavedModels, as TF Serving loads them) compute what the JAX example
functions compute, from the same weight files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from runtimes.examples import SPECS, load_weights, sample_inputs
from runtimes.examples.weights import weights_path

tf: Any = pytest.importorskip("tensorflow")
jax: Any = pytest.importorskip("jax")

# The frameworks sum in different orders (oneDNN's blocked convolutions and matmuls against XLA's), so
# float32 answers differ in the last bits. Measured worst case over 5 x 64 random rows: cnn 3.7e-8,
# mlp 1.9e-7, transformer 4.8e-7 (outputs up to ~1.7: a few ulp, grown through two layer norms). ATOL
# is ten times the worst, RTOL scales it for larger outputs; a real mismatch is far larger: the exact
# GELU instead of the tanh one moves the transformer by 2e-4, Keras's layer-norm epsilon (1e-3) by 1e-3.
RTOL: Final = 1e-5
ATOL: Final = 5e-6
ROWS: Final = 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The TF SavedModels, exported from weight files that the JAX side then reads too."""
    from runtimes.tfserving.examples import export_examples

    root = tmp_path_factory.mktemp("examples")
    export_examples(root / "tfserving-models", weights=root / "weights")
    return root / "tfserving-models", root / "weights"


def _inputs(name: str) -> tuple[np.ndarray, ...]:
    inputs = sample_inputs(SPECS[name], np.random.default_rng(7), ROWS)
    if name == "transformer":  # ids outside the vocabulary are clipped by both, not gathered as garbage
        inputs[0][0, :3] = [-5, 128, 10_000]
    return inputs


def _serving_signature(base: Path, name: str) -> Any:
    return tf.saved_model.load(str(base / name / "1")).signatures["serving_default"]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_savedmodel_matches_the_jax_function(name: str, exported: tuple[Path, Path]) -> None:
    """Each SavedModel's serving signature gives the JAX function's outputs within RTOL/ATOL."""
    from runtimes.jax.examples import APPLY

    base, weights = exported
    spec = SPECS[name]
    inputs = _inputs(name)
    want = np.asarray(jax.jit(APPLY[name])(load_weights(weights_path(weights, name)), *inputs))
    got = _serving_signature(base, name)(
        **{t.name: tf.constant(x) for t, x in zip(spec.inputs, inputs, strict=True)}
    )
    (output,) = spec.outputs
    assert set(got) == {output.name}
    np.testing.assert_allclose(got[output.name].numpy(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_serving_signature_has_the_jax_models_tensors(name: str, exported: tuple[Path, Path]) -> None:
    """serving_default's inputs and outputs carry the JAX model's names and dtypes, with a None batch."""
    base, _ = exported
    signature = _serving_signature(base, name)
    spec = SPECS[name]
    _, inputs = signature.structured_input_signature
    for tensors, specs in ((inputs, spec.inputs), (signature.structured_outputs, spec.outputs)):
        assert set(tensors) == {t.name for t in specs}
        for t in specs:
            assert tensors[t.name].dtype == tf.as_dtype(t.dtype)
            assert tensors[t.name].shape.as_list() == [None, *t.shape[1:]]


def test_export_replaces_a_version_atomically(exported: tuple[Path, Path]) -> None:
    """A second export over the same base replaces version 1 and leaves no staging directory behind."""
    from runtimes.tfserving.examples import export_examples

    base, weights = exported
    assert export_examples(base, weights=weights) == [base / name / "1" for name in SPECS]
    for name in SPECS:
        assert sorted(p.name for p in (base / name).iterdir()) == ["1"]
        assert (base / name / "1" / "saved_model.pb").is_file()

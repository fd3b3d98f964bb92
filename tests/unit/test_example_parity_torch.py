"""The example models in PyTorch (the TorchScript inside each TorchServe archive) compute what the JAX
example functions compute, from the same weight files, within test_example_parity's tolerance."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtimes.examples import SPECS, load_weights
from runtimes.examples.weights import weights_path
from tests.unit.test_example_parity import ATOL, RTOL, _inputs

torch: Any = pytest.importorskip("torch")
jax: Any = pytest.importorskip("jax")

# Measured worst case over these 5 rows: cnn 2.2e-8, mlp 8.9e-8, transformer 3.6e-7, the same few ulp
# as TensorFlow's.


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The TorchServe archives, built from weight files that the JAX side then reads too."""
    from runtimes.torchserve.examples import export_examples

    root = tmp_path_factory.mktemp("examples")
    export_examples(root / "torchserve-models", weights=root / "weights")
    return root / "torchserve-models", root / "weights"


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")
def test_archived_torchscript_matches_the_jax_function(name: str, archived: tuple[Path, Path]) -> None:
    """The TorchScript model in each .mar gives the JAX function's outputs within RTOL/ATOL."""
    from runtimes.jax.examples import APPLY

    store, weights = archived
    inputs = _inputs(name)
    want = np.asarray(jax.jit(APPLY[name])(load_weights(weights_path(weights, name)), *inputs))
    with zipfile.ZipFile(store / f"{name}.mar") as archive:
        archive.extract(f"{name}.pt", store / "unpacked")
    model = torch.jit.load(str(store / "unpacked" / f"{name}.pt"))
    with torch.inference_mode():
        got = model(*(torch.from_numpy(np.array(x)) for x in inputs)).numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)

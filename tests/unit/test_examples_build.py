"""`runtimes.examples`: seeded weights, their files, and the build that runs each framework's exporter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtimes.examples import SPECS, ensure_weights, load_weights, save_weights
from runtimes.examples.build import Framework, build_examples, progress_line


def _leaves(tree: object, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _leaves(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in _leaves(value, f"{prefix}[{i}]").items()}
    assert isinstance(tree, np.ndarray)
    return {prefix: tree}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_weight_file_round_trips_bit_for_bit(name: str, tmp_path: Path) -> None:
    """A saved weight file loads back with the same nesting (lists stay lists) and identical bytes."""
    params, _ = SPECS[name].draw(0)
    save_weights(tmp_path / "w.npz", params)
    loaded = load_weights(tmp_path / "w.npz")
    want, got = _leaves(params), _leaves(loaded)
    assert list(got) == list(want)
    for key, array in want.items():
        assert got[key].dtype == array.dtype and got[key].tobytes() == array.tobytes(), key


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    """Weights are a function of the seed alone."""
    first, second, other = (_leaves(SPECS["mlp"].draw(seed)[0]) for seed in (0, 0, 1))
    assert all(first[k].tobytes() == second[k].tobytes() for k in first)
    assert any(first[k].tobytes() != other[k].tobytes() for k in first)


def test_ensure_weights_writes_once(tmp_path: Path) -> None:
    """An existing weight file is read as it is, never redrawn over (both exporters share it)."""
    path = ensure_weights(tmp_path, "mlp")
    save_weights(path, {"layers": [{"w": np.ones((1, 1), np.float32)}]})
    assert ensure_weights(tmp_path, "mlp") == path
    assert load_weights(path)["layers"][0]["w"].tolist() == [[1.0]]


def test_build_skips_a_framework_that_is_not_installed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A framework whose package is missing is skipped with a message naming it; the build still succeeds."""
    missing = Framework("nothere", "nothere-models", "no_such_package_xyz", "no_such_package_xyz", ())
    assert build_examples(tmp_path, frameworks=(missing,)) == 0
    err = capsys.readouterr().err
    assert "nothere" in err and "no_such_package_xyz is not installed" in err
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == sorted(f"{n}.npz" for n in SPECS)


def test_build_leaves_models_that_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Models already built at the version are reported up to date and their exporter is not run."""
    framework = Framework("fake", "fake-models", "no_such_package_xyz", "no_such_package_xyz", ())
    for name in SPECS:
        (tmp_path / "fake-models" / name / "1").mkdir(parents=True)
    assert build_examples(tmp_path, frameworks=(framework,)) == 0
    err = capsys.readouterr().err
    assert progress_line("fake", "cnn", None, tmp_path / "fake-models" / "cnn" / "1") in err
    assert "not installed" not in err


def test_build_fails_when_an_exporter_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An installed framework whose exporter exits non-zero makes the build exit 1, naming it."""
    broken = Framework("broken", "broken-models", "numpy", "runtimes.examples.no_such_module", ())
    assert build_examples(tmp_path, frameworks=(broken,)) == 1
    assert "failed to build for: broken" in capsys.readouterr().err

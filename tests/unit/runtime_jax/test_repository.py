"""The repository layout on disk and the version policies that choose what to serve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runtimes.jax.repository import VersionPolicy, scan
from tests.unit.runtime_jax.fakes import make_version


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("latest", VersionPolicy("latest", count=1)),
        ("latest:3", VersionPolicy("latest", count=3)),
        ("all", VersionPolicy("all")),
        ("specific:1,3", VersionPolicy("specific", versions=frozenset({1, 3}))),
    ],
)
def test_policy_parses_cli_form(text: str, policy: VersionPolicy) -> None:
    """The CLI/model.json string forms parse to the policy they name, and print back."""
    assert VersionPolicy.parse(text) == policy
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["latest:0", "latest:x", "some", "all:2", "specific:", "specific:a", "specific:0"]
)
def test_policy_rejects_malformed_text(text: str) -> None:
    """A malformed policy is an error, never silently the default."""
    with pytest.raises(ValueError, match="invalid version policy"):
        VersionPolicy.parse(text)


@pytest.mark.parametrize(
    ("value", "policy"),
    [
        ({"latest": 2}, VersionPolicy("latest", count=2)),
        ({"all": True}, VersionPolicy("all")),
        ({"specific": [2]}, VersionPolicy("specific", versions=frozenset({2}))),
        ("latest:2", VersionPolicy("latest", count=2)),
    ],
)
def test_policy_parses_json_form(value: Any, policy: VersionPolicy) -> None:
    """model.json may give the policy as an object or as the CLI string."""
    assert VersionPolicy.from_json(value) == policy


@pytest.mark.parametrize(
    ("policy", "selected"),
    [
        ("latest:1", {10}),
        ("latest:2", {3, 10}),
        ("latest:9", {1, 2, 3, 10}),
        ("all", {1, 2, 3, 10}),
        ("specific:2,7", {2}),
    ],
)
def test_policy_selects_versions(policy: str, selected: set[int]) -> None:
    """latest orders versions numerically (10 > 3); specific ignores versions not on disk."""
    assert VersionPolicy.parse(policy).select([1, 2, 3, 10]) == selected


def test_scan_finds_complete_versions_only(tmp_path: Path) -> None:
    """Incomplete, non-numeric and dot-prefixed (staging) directories are not versions."""
    make_version(tmp_path, "cnn", 1)
    make_version(tmp_path, "cnn", 2)
    (tmp_path / "cnn" / "3").mkdir()  # still being copied: no files yet
    make_version(tmp_path, "cnn", ".4.tmp")
    make_version(tmp_path, "cnn", "latest")
    make_version(tmp_path, ".hidden", 1)
    models = scan(tmp_path)
    assert list(models) == ["cnn"]
    assert sorted(models["cnn"].versions) == [1, 2]
    assert models["cnn"].policy is None


def test_scan_ignores_non_ascii_digit_directories(tmp_path: Path) -> None:
    """A directory named like "²" (isdigit, but not an int) is not a version and does not break the scan."""
    make_version(tmp_path, "cnn", 1)
    make_version(tmp_path, "cnn", "²")
    assert sorted(scan(tmp_path)["cnn"].versions) == [1]


def test_scan_reports_the_models_it_skips(tmp_path: Path) -> None:
    """The models skipped for an unreadable model.json are named, so a caller can tell them from gone ones."""
    make_version(tmp_path, "bad", 1)
    (tmp_path / "bad" / "model.json").write_text('{"version_policy": ')
    skipped: set[str] = set()
    assert scan(tmp_path, skipped=skipped) == {} and skipped == {"bad"}


def test_scan_reads_model_policy_and_skips_broken_one(tmp_path: Path) -> None:
    """model.json sets a model's policy; a broken model.json skips that model only."""
    make_version(tmp_path, "good", 1)
    (tmp_path / "good" / "model.json").write_text(json.dumps({"version_policy": {"latest": 2}}))
    make_version(tmp_path, "bad", 1)
    (tmp_path / "bad" / "model.json").write_text(json.dumps({"version_policy": "newest"}))
    models = scan(tmp_path)
    assert list(models) == ["good"]
    assert models["good"].policy == VersionPolicy("latest", count=2)


def test_fingerprint_changes_when_a_file_is_replaced(tmp_path: Path) -> None:
    """Replacing a version's weights changes its fingerprint, which triggers a reload."""
    path = make_version(tmp_path, "m", 1)
    before = scan(tmp_path)["m"].versions[1].fingerprint
    (path / "weights.npz").write_text("{ new weights }")
    assert scan(tmp_path)["m"].versions[1].fingerprint != before

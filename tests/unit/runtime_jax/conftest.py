"""Session-wide exported and compiled example models: XLA runs once per test session, not per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtimes.jax.compiled import CompiledModel
from runtimes.jax.examples import EXAMPLES, ExampleModel, export_examples
from runtimes.jax.repository import VersionDir

MAX_BATCH = 4  # buckets 1, 2, 4: three compiles per model keep the suite fast


class SharedModel:
    """A compiled model handed to many ModelManagers; their unloads must not free it."""

    def __init__(self, model: CompiledModel) -> None:
        self.config = model.config
        self.replicas = model.replicas

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    export_examples(root, max_batch_size=MAX_BATCH)
    return root


@pytest.fixture(scope="session")
def examples() -> dict[str, ExampleModel]:
    return {name: build(0) for name, build in EXAMPLES.items()}


@pytest.fixture(scope="session")
def compiled(example_repo: Path) -> Iterator[dict[str, CompiledModel]]:
    models = {name: CompiledModel.load(example_repo / name / "1") for name in EXAMPLES}
    yield models
    for model in models.values():
        model.close()


@pytest.fixture(scope="session")
def shared_loader(compiled: dict[str, CompiledModel]) -> object:
    """A ModelManager loader that returns the session's compiled models instead of compiling again."""

    def load(source: VersionDir) -> SharedModel:
        return SharedModel(compiled[source.model])

    return load

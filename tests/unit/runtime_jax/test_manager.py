"""Hot reload: the served versions follow the repository and its policies, without gaps or collateral."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import ModelNotFound, ModelNotReady
from runtimes.jax.manager import ModelManager
from runtimes.jax.metrics import RuntimeMetrics
from runtimes.jax.repository import VersionPolicy
from tests.unit.runtime_common.fakes import rows
from tests.unit.runtime_jax.fakes import FakeLoader, eventually, fake_config, make_version


@pytest.fixture
def loader() -> FakeLoader:
    return FakeLoader()


@pytest.fixture
async def managers() -> AsyncIterator[list[ModelManager]]:
    """Managers a test creates are closed after it, whatever it asserted."""
    created: list[ModelManager] = []
    yield created
    for manager in created:
        await manager.close()


def new_manager(
    managers: list[ModelManager], root: Path, loader: FakeLoader, policy: str = "latest:1", poll: float = 0
) -> ModelManager:
    manager = ModelManager(
        root,
        loader,
        default_policy=VersionPolicy.parse(policy),
        poll_interval_s=poll,
        metrics=RuntimeMetrics(),
    )
    managers.append(manager)
    return manager


def gauge(manager: ModelManager, name: str, labels: dict[str, str] | None = None) -> float | None:
    return manager._metrics.registry.get_sample_value(name, labels or {})


async def test_start_serves_latest_version_by_default(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """With latest:1, only the highest version loads; unversioned requests go to it."""
    for v in (1, 2, 10):
        make_version(tmp_path, "m", v)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    assert manager.ready and manager.versions("m") == ["10"]
    assert manager.resolve("m").version == "10"
    assert loader.loads == [("m", 10)]
    with pytest.raises(ModelNotFound):
        manager.resolve("m", "1")  # on disk, but not offered by the policy
    with pytest.raises(ModelNotFound):  # past int()'s 4300-digit limit: the client's 404, not a 500
        manager.resolve("m", "1" * 5000)


async def test_model_json_policy_overrides_the_default(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """A model's own version_policy wins over the CLI default; the highest ready version is the default."""
    for v in (1, 2):
        make_version(tmp_path, "m", v)
    (tmp_path / "m" / "model.json").write_text('{"version_policy": "all"}')
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    assert manager.versions("m") == ["1", "2"]
    assert manager.resolve("m").version == "2" and manager.resolve("m", "1").version == "1"


async def test_polling_loads_added_and_unloads_removed_versions(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """A version directory added is loaded, one removed is unloaded, a model removed disappears."""
    make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader, policy="all", poll=0.02)
    await manager.start()
    make_version(tmp_path, "m", 2)
    await eventually(lambda: manager.versions("m") == ["1", "2"])
    shutil.rmtree(tmp_path / "m" / "2")
    await eventually(lambda: manager.versions("m") == ["1"])
    assert loader.loaded[("m", 2)][0].closed
    shutil.rmtree(tmp_path / "m")
    await eventually(lambda: manager.models() == [])
    with pytest.raises(ModelNotFound):
        manager.resolve("m")
    assert gauge(manager, "jax_runtime_models_loaded") == 0


async def test_new_version_replaces_old_only_once_ready(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """While the new version loads the old one keeps serving; it is unloaded only after the swap."""
    make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    old = loader.loaded[("m", 1)][0]
    make_version(tmp_path, "m", 2)
    loader.gates[("m", 2)] = gate = threading.Event()
    sync = asyncio.ensure_future(manager.sync())
    await eventually(lambda: ("m", 2) in loader.loads)
    assert manager.resolve("m").version == "1"  # no gap while 2 compiles
    assert not manager.is_ready("m", "2") and not old.closed
    gate.set()
    await sync
    assert manager.resolve("m").version == "2" and manager.versions("m") == ["2"]
    assert old.closed


async def test_failed_version_is_reported_and_does_not_take_others_down(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """A version that fails to load is counted, leaves the serving one in place, and is not retried as is."""
    make_version(tmp_path, "m", 1)
    make_version(tmp_path, "other", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    loader.fail.add(("m", 2))
    path = make_version(tmp_path, "m", 2)
    await manager.sync()
    assert manager.resolve("m").version == "1" and manager.versions("other") == ["1"]
    assert gauge(manager, "jax_runtime_model_load_failures_total", {"model": "m", "version": "2"}) == 1
    with pytest.raises(ModelNotReady, match="failed to load"):
        manager.resolve("m", "2")
    await manager.sync()
    assert loader.loads.count(("m", 2)) == 1  # same files: not compiled again every poll
    loader.fail.clear()
    (path / "weights.npz").write_text("{ fixed }")
    await manager.sync()
    assert manager.versions("m") == ["2"]


async def test_replaced_files_reload_the_version(tmp_path: Path, loader: FakeLoader, managers: list) -> None:
    """Rewriting a served version's files loads it again and retires the previous load."""
    path = make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    (path / "config.json").write_text('{"changed": true}')
    await manager.sync()
    first, second = loader.loaded[("m", 1)]
    assert first.closed and not second.closed
    assert manager.resolve("m").loaded is second


async def test_loading_model_is_known_but_not_ready(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """During its first load a model reports not ready (not unknown); an unknown one raises NotFound."""
    make_version(tmp_path, "m", 1)
    loader.gates[("m", 1)] = gate = threading.Event()
    manager = new_manager(managers, tmp_path, loader)
    start = asyncio.ensure_future(manager.start())
    await eventually(lambda: ("m", 1) in loader.loads)
    assert not manager.is_ready("m") and not manager.is_ready("m", "1") and not manager.ready
    with pytest.raises(ModelNotFound):
        manager.is_ready("nope")
    with pytest.raises(ModelNotFound):
        manager.is_ready("m", "x")
    gate.set()
    await start
    assert manager.is_ready("m") and manager.ready


async def test_close_unloads_everything(tmp_path: Path, loader: FakeLoader, managers: list) -> None:
    """Closing the manager unloads every version and frees its resources."""
    make_version(tmp_path, "a", 1)
    make_version(tmp_path, "b", 1)
    manager = new_manager(managers, tmp_path, loader, poll=0.02)
    await manager.start()
    assert gauge(manager, "jax_runtime_models_loaded") == 2
    await manager.close()
    assert all(loaded.closed for loads in loader.loaded.values() for loaded in loads)
    assert manager.models() == ["a", "b"] and manager.versions("a") == [] and not manager.ready


async def test_unreadable_model_json_leaves_the_model_serving(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """A model.json caught mid-write (or with a typo) keeps the model's versions serving until it reads."""
    make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    (tmp_path / "m" / "model.json").write_text('{"version_policy": ')
    await manager.sync()
    assert manager.resolve("m").version == "1" and not loader.loaded[("m", 1)][0].closed
    make_version(tmp_path, "m", 2)
    (tmp_path / "m" / "model.json").write_text('{"version_policy": "all"}')
    await manager.sync()
    assert manager.versions("m") == ["1", "2"] and loader.loads == [("m", 1), ("m", 2)]


async def test_non_ascii_digit_version_is_not_found(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """A version like "²" (a Unicode digit int() refuses) is an unknown version, not an internal error."""
    make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    with pytest.raises(ModelNotFound):
        manager.resolve("m", "²")


async def test_unloaded_version_leaves_no_metric_series(
    tmp_path: Path, loader: FakeLoader, managers: list
) -> None:
    """An unloaded version's series are dropped: hot reloads do not pile up version label values."""
    make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    manager._metrics.requests.labels("m", "1", "OK").inc()
    manager._metrics.observe_compile("m", "1", 0.5)
    v1 = {"model": "m", "version": "1"}
    assert gauge(manager, "jax_runtime_batch_size_count", v1) == 0
    make_version(tmp_path, "m", 2)
    await manager.sync()
    assert gauge(manager, "jax_runtime_requests_total", {**v1, "code": "OK"}) is None
    assert gauge(manager, "jax_runtime_batch_size_count", v1) is None
    assert gauge(manager, "jax_runtime_compile_duration_seconds_count", v1) is None
    assert gauge(manager, "jax_runtime_batch_size_count", {"model": "m", "version": "2"}) == 0


async def test_instances_per_device_run_batches_at_once(tmp_path: Path, managers: list) -> None:
    """With two instances per device, two full batches run on the one replica at the same time."""
    gate = threading.Event()
    loader = FakeLoader(fake_config(max_batch_size=2, delay_ms=0, instances=2), runner_gate=gate)
    make_version(tmp_path, "m", 1)
    manager = new_manager(managers, tmp_path, loader)
    await manager.start()
    batcher = manager.resolve("m").batcher
    pending = [asyncio.create_task(batcher.submit([rows(2, start=10 * i)])) for i in range(3)]
    (runner,) = loader.loaded[("m", 1)][0].replicas
    await eventually(lambda: len(runner.batches) == 2)
    await asyncio.sleep(0.05)  # a third instance, if there were one, would start now
    assert runner.peak_running == 2 and len(runner.batches) == 2
    gate.set()
    results = await asyncio.gather(*pending)
    assert [r[0][:, 0].tolist() for r in results] == [[0, 2], [20, 22], [40, 42]]

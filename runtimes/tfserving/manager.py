"""Which versions are served: each model's base path scanned, its policy applied, versions (un)loaded.

As TF Serving's ServerCore, in miniature:

- A version directory is `<base_path>/<positive integer>/` holding `saved_model.pb`.
- A wanted version is loaded (traced, warmed up) off the event loop and only then reported AVAILABLE;
  versions that fall out of the policy are unloaded after the wanted ones were tried, so an upgrade
  has no gap. A version that fails to load is reported END with its error and is not retried until the
  config is applied again.
- `apply` replaces the model list (startup, `HandleReloadConfigRequest`, the config file poll); models
  missing from the new list are unloaded and forgotten. `reconcile` re-scans the disk (the
  `--file_system_poll_wait_seconds` poll).
- A request without a version goes to the highest AVAILABLE version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tensorflow_serving.apis import get_model_status_pb2

from gateway.errors import ConfigError, ErrorCode, GatewayError, clip
from runtimes.common.versions import is_version_number
from runtimes.tfserving.config import ModelConfig
from runtimes.tfserving.model import LoadedVersion

_log = logging.getLogger(__name__)
_State = get_model_status_pb2.ModelVersionStatus.State
LOADING: Final = _State.LOADING
AVAILABLE: Final = _State.AVAILABLE
UNLOADING: Final = _State.UNLOADING
END: Final = _State.END

# Blocking (run in a thread): loads one version, raises on failure.
Loader = Callable[[str, int, Path], LoadedVersion]


@dataclass(eq=False)
class VersionRecord:
    """What GetModelStatus reports for one version; `loaded` is set while it is AVAILABLE."""

    version: int
    state: int
    error: str = ""
    loaded: LoadedVersion | None = None


def scan_versions(base_path: Path) -> dict[int, Path]:
    """The complete version directories under a base path (a missing path has none)."""
    found: dict[int, Path] = {}
    try:
        entries = list(base_path.iterdir())
    except OSError:
        return found
    for entry in entries:
        name = entry.name
        if is_version_number(name) and (entry / "saved_model.pb").is_file():
            found[int(name)] = entry
    return found


def not_found(model: str, version: int | None) -> GatewayError:
    """TF Serving's NOT_FOUND for a servable it does not serve."""
    request = f"Specific({clip(model)}, {version})" if version is not None else f"Latest({clip(model)})"
    return GatewayError(f"Servable not found for request: {request}", code=ErrorCode.NOT_FOUND)


class ModelManager:
    """The served models and their version states; all methods run on the event loop."""

    def __init__(self, loader: Loader, *, allow_labels_for_unavailable: bool = False) -> None:
        self._loader = loader
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._configs: dict[str, ModelConfig] = {}
        self._records: dict[str, dict[int, VersionRecord]] = {}
        self._lock = asyncio.Lock()

    def serves(self, model: str) -> bool:
        """Whether `model` is configured (a dict lookup: asked on every request, for its metric label)."""
        return model in self._configs

    async def apply(self, models: Sequence[ModelConfig]) -> None:
        """Serves exactly `models` from now on. `ConfigError` (nothing changed) if a label points at a
        version the policy does not serve."""
        async with self._lock:
            for model in models:
                self._check_labels(model, scan_versions(model.base_path))
            gone = [name for name in self._configs if name not in {m.name for m in models}]
            self._configs = {m.name: m for m in models}
            for name in gone:
                await self._unload_all(name)
            for model in models:
                # A new config is a new chance for versions that failed before.
                records = self._records.get(model.name, {})
                for version in [v for v, r in records.items() if r.state == END]:
                    del records[version]
                await self._reconcile_model(model)

    async def reconcile(self) -> None:
        """Re-scans every model's base path: new versions load, versions out of the policy unload."""
        async with self._lock:
            for model in list(self._configs.values()):
                await self._reconcile_model(model)

    async def close(self) -> None:
        async with self._lock:
            for name in list(self._records):
                await self._unload_all(name)

    def resolve(self, model: str, version: int | None = None, label: str = "") -> LoadedVersion:
        """The AVAILABLE version a request names (by number, label, or the latest)."""
        if label:
            version = self.label_version(model, label)
        records = self._records.get(model, {})
        if version is not None:
            record = records.get(version)
            if record is None or record.loaded is None:
                raise not_found(model, version)
            return record.loaded
        available = [r for r in records.values() if r.loaded is not None]
        if not available:
            raise not_found(model, None)
        loaded = max(available, key=lambda r: r.version).loaded
        assert loaded is not None
        return loaded

    def label_version(self, model: str, label: str) -> int:
        config = self._configs.get(model)
        version = config.labels.get(label) if config is not None else None
        if version is None:
            raise GatewayError(
                f"Unrecognized servable version label: {clip(label)}", code=ErrorCode.INVALID_ARGUMENT
            )
        return version

    def statuses(self, model: str, version: int | None = None, label: str = "") -> list[VersionRecord]:
        """GetModelStatus: every version's record, or the one asked for."""
        records = self._records.get(model)
        if not records:
            raise GatewayError(
                f"Could not find any versions of model {clip(model)}", code=ErrorCode.NOT_FOUND
            )
        if label:
            version = self.label_version(model, label)
        if version is None:
            return [records[v] for v in sorted(records, reverse=True)]
        if version not in records:
            raise GatewayError(
                f"Could not find version {version} of model {clip(model)}", code=ErrorCode.NOT_FOUND
            )
        return [records[version]]

    def _check_labels(self, model: ModelConfig, on_disk: dict[int, Path]) -> None:
        if self._allow_unavailable_labels:
            return
        served = model.policy.select(on_disk)
        for label, version in model.labels.items():
            if version not in served:
                raise ConfigError(
                    f"model '{model.name}': version label '{label}' points at version {version}, which "
                    f"its policy {model.policy} does not serve from {model.base_path}"
                )

    async def _reconcile_model(self, model: ModelConfig) -> None:
        on_disk = scan_versions(model.base_path)
        if not on_disk:
            _log.warning("no versions of model '%s' found under %s", model.name, model.base_path)
        wanted = model.policy.select(on_disk)
        records = self._records.setdefault(model.name, {})
        for version in sorted(wanted):
            record = records.get(version)
            if record is None or (record.state == END and not record.error):
                await self._load(model.name, version, on_disk[version], records)
        for version, record in sorted(records.items()):
            if version not in wanted and record.loaded is not None:
                await self._unload(model.name, record)

    async def _load(self, model: str, version: int, path: Path, records: dict[int, VersionRecord]) -> None:
        record = records[version] = VersionRecord(version, LOADING)
        _log.info("loading model '%s' version %d from %s", model, version, path)
        try:
            loaded = await asyncio.to_thread(self._loader, model, version, path)
        except Exception as exc:
            _log.exception("model '%s' version %d failed to load", model, version)
            record.state, record.error = END, f"failed to load: {type(exc).__name__}: {clip(str(exc))}"
            return
        if self._configs.get(model) is None:  # unconfigured while it loaded
            await loaded.close()
            record.state = END
            return
        record.loaded, record.state = loaded, AVAILABLE
        _log.info("model '%s' version %d is AVAILABLE", model, version)

    async def _unload(self, model: str, record: VersionRecord) -> None:
        loaded, record.loaded = record.loaded, None  # no new request resolves to it from here
        record.state = UNLOADING
        if loaded is not None:
            await loaded.close()  # queued requests finish first
        record.state = END
        _log.info("model '%s' version %d unloaded", model, record.version)

    async def _unload_all(self, name: str) -> None:
        for record in list(self._records.get(name, {}).values()):
            if record.loaded is not None:
                await self._unload(name, record)
        self._records.pop(name, None)

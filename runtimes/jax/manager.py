"""Which model versions are served: the repository polled, diffed against what is loaded, reconciled.

Rules, in the order they protect traffic:

- A new or changed version is loaded (compiled and warmed up, off the event loop) and only then
  swapped in; the version it replaces is unloaded after the swap, its queued requests drained. So an
  upgrade has no gap.
- A version that fails to load is logged and counted, and not retried until its files change. It never
  takes down the versions already serving: a version that has fallen out of the policy is unloaded
  only once a version the policy wants is ready (or the policy wants none, e.g. its directory is gone).
- A model whose `model.json` cannot be read (a typo, or a write caught halfway) keeps serving what it
  served until the file reads again: only a model directory that is gone unloads the model.
- A request without a version goes to the highest version ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import ConfigError, ModelNotFound, ModelNotReady
from gateway.types import ModelMetadata
from runtimes.common.batching import BatchRunner, DynamicBatcher
from runtimes.jax.config import ModelVersionConfig
from runtimes.jax.metrics import RuntimeMetrics
from runtimes.jax.repository import (
    DEFAULT_POLICY,
    Fingerprint,
    ModelDir,
    VersionDir,
    VersionPolicy,
    is_version_number,
    scan,
)
from runtimes.jax.validation import signature

_log = logging.getLogger(__name__)


class LoadedModel(Protocol):
    """What a loader returns: `compiled.CompiledModel`, or a fake in tests."""

    @property
    def config(self) -> ModelVersionConfig: ...

    @property
    def replicas(self) -> Sequence[BatchRunner]: ...

    def close(self) -> None: ...


# Blocking: the manager runs it in a worker thread. Raises on failure.
Loader = Callable[[VersionDir], LoadedModel]


@dataclass(eq=False, slots=True)
class ServedVersion:
    model: str
    version: str
    source: VersionDir
    loaded: LoadedModel
    batcher: DynamicBatcher
    signature: ModelMetadata  # what requests are validated against (built once, at load)

    @property
    def config(self) -> ModelVersionConfig:
        return self.loaded.config


class ModelManager:
    """Loads and unloads model versions so that what is served follows the repository and its policies."""

    def __init__(
        self,
        root: Path,
        loader: Loader,
        *,
        default_policy: VersionPolicy | None = None,
        poll_interval_s: float = 2.0,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.root = root
        self._loader = loader
        self._default_policy = default_policy or DEFAULT_POLICY
        self._poll_interval_s = poll_interval_s
        self._metrics = metrics if metrics is not None else RuntimeMetrics()
        self._served: dict[str, dict[int, ServedVersion]] = {}
        self._wanted: dict[str, set[int]] = {}
        self._failed: dict[tuple[str, int], Fingerprint] = {}
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        """True once the first pass over the repository finished, until `close`."""
        return self._ready

    async def start(self) -> None:
        """Loads what the repository holds, then polls it every `poll_interval_s` (0: never)."""
        await self.sync()
        self._ready = True
        if self._poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll(), name="model-repository-poller")

    async def close(self) -> None:
        """Stops polling and unloads everything, draining each version's queued requests."""
        self._ready = False
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        async with self._lock:
            for model in list(self._served):
                for version in list(self._served[model]):
                    await self._unload(model, version)

    async def sync(self) -> None:
        """One pass: scan the repository and load or unload until the served set matches it."""
        async with self._lock:
            skipped: set[str] = set()
            models = await asyncio.to_thread(scan, self.root, skipped=skipped)
            await self._reconcile(models, skipped)

    def models(self) -> list[str]:
        return sorted(set(self._wanted) | set(self._served))

    def versions(self, model: str) -> list[str]:
        """The versions of `model` serving now, oldest first."""
        return [str(v) for v in sorted(self._served.get(model, {}))]

    def resolve(self, model: str, version: str = "") -> ServedVersion:
        """The served version for a request; "" means the highest version ready.

        Raises:
            ModelNotFound: No such model, or a version the repository or policy does not offer.
            ModelNotReady: The version (or every version) is still loading or failed to load.
        """
        served = self._served.get(model, {})
        if not served and model not in self._wanted:
            raise ModelNotFound(model, version)
        if not version:
            if served:
                return served[max(served)]
            raise ModelNotReady(f"model '{model}' has no version ready")
        number = int(version) if is_version_number(version) else -1
        if number in served:
            return served[number]
        if number in self._wanted.get(model, ()):
            state = "failed to load" if (model, number) in self._failed else "is loading"
            raise ModelNotReady(f"model '{model}' version '{version}' {state}")
        raise ModelNotFound(model, version)

    def is_ready(self, model: str, version: str = "") -> bool:
        """False for a known version that is not ready; `ModelNotFound` for an unknown one."""
        try:
            self.resolve(model, version)
        except ModelNotReady:
            return False
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await self.sync()
            except Exception:
                _log.exception("polling the model repository %s failed", self.root)

    async def _reconcile(self, models: dict[str, ModelDir], skipped: set[str]) -> None:
        for name, entry in models.items():
            wanted = (entry.policy or self._default_policy).select(entry.versions)
            self._wanted[name] = wanted
            # Newest first: it is the one unversioned requests go to, so it should be ready first.
            for number in sorted(wanted, reverse=True):
                source = entry.versions[number]
                current = self._served.get(name, {}).get(number)
                if current is not None and current.source.fingerprint == source.fingerprint:
                    continue
                if self._failed.get((name, number)) == source.fingerprint:
                    continue  # already failed with these very files
                await self._load(source, replacing=current)
            served = self._served.get(name, {})
            if not wanted or wanted & set(served):
                for number in [v for v in served if v not in wanted]:
                    await self._unload(name, number)
        # A skipped model (unreadable model.json) is still there: leave it as it is.
        for name in [m for m in self._served if m not in models and m not in skipped]:
            for number in list(self._served[name]):
                await self._unload(name, number)
        for name in [m for m in self._wanted if m not in models and m not in skipped]:
            del self._wanted[name]
        self._failed = {key: fp for key, fp in self._failed.items() if key[1] in self._wanted.get(key[0], ())}

    async def _load(self, source: VersionDir, *, replacing: ServedVersion | None) -> None:
        model, version = source.model, str(source.version)
        _log.info("loading model %s version %s from %s", model, version, source.path)
        try:
            loaded = await asyncio.to_thread(self._loader, source)
        except Exception as exc:
            self._failed[(model, source.version)] = source.fingerprint
            self._metrics.load_failures.labels(model, version).inc()
            # A config problem is explained by its message; anything else needs the traceback.
            _log.error(
                "model %s version %s failed to load: %s",
                model,
                version,
                exc,
                exc_info=not isinstance(exc, ConfigError),
            )
            return
        self._failed.pop((model, source.version), None)
        # Each instance is a runner of its own (a worker thread) sharing its device's replica; listed
        # device by device in turn, so consecutive batches alternate devices.
        instances = loaded.config.instances_per_device
        runners = [r for _ in range(instances) for r in loaded.replicas]
        batcher = DynamicBatcher(
            f"model '{model}' version '{version}'",
            runners,
            loaded.config.batching,
            # A second slot per runner keeps a lone instance's device busy while the loop forms the
            # next batch; with several instances another instance does that, and smaller batches
            # would be all the extra slots bought.
            depth=2 if instances == 1 else 1,
            stats=self._metrics.batch_stats(model, version),
            thread_name="jax-replica",
        )
        self._served.setdefault(model, {})[source.version] = ServedVersion(
            model, version, source, loaded, batcher, signature(model, loaded.config)
        )
        self._update_gauge()
        _log.info("model %s version %s ready", model, version)
        if replacing is not None:
            await self._retire(replacing)

    async def _unload(self, model: str, number: int) -> None:
        served = self._served[model].pop(number)
        if not self._served[model]:
            del self._served[model]
        self._update_gauge()
        await self._retire(served)
        self._metrics.forget_version(model, served.version)
        _log.info("model %s version %s unloaded", model, number)

    async def _retire(self, served: ServedVersion) -> None:
        # Already out of the table, so no new request reaches it; drain what it has queued.
        await served.batcher.close()
        await asyncio.to_thread(served.loaded.close)

    def _update_gauge(self) -> None:
        self._metrics.models_loaded.set(sum(len(versions) for versions in self._served.values()))

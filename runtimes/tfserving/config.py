"""TF Serving's config files, read into plain values: the model list, batching and monitoring.

Each reader raises `ConfigError` naming the file and, from protobuf's text-format parser, the line and
the unknown or malformed field; nothing half-read is ever served.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from gateway.errors import ConfigError
from runtimes.common.batching import BatchingConfig, default_buckets
from runtimes.tfserving.textprotos import BatchingParameters, MonitoringConfig

DEFAULT_METRICS_PATH: Final = "/monitoring/prometheus/metrics"
# TF Serving's BasicBatchScheduler defaults, for fields a batching parameters file leaves out.
DEFAULT_MAX_BATCH_SIZE: Final = 1000
DEFAULT_BATCH_TIMEOUT_MICROS: Final = 0
DEFAULT_MAX_ENQUEUED_BATCHES: Final = 10
DEFAULT_NUM_BATCH_THREADS: Final = 1


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """`ServableVersionPolicy`: the `latest` N versions (the default, N=1), `all`, or `specific` ones."""

    kind: str = "latest"
    count: int = 1
    versions: frozenset[int] = frozenset()

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve among those on disk."""
        present = set(available)
        if self.kind == "all":
            return present
        if self.kind == "specific":
            return present & self.versions
        return set(sorted(present)[-self.count :])

    def __str__(self) -> str:
        if self.kind == "specific":
            return f"specific({', '.join(str(v) for v in sorted(self.versions))})"
        return f"latest({self.count})" if self.kind == "latest" else "all"


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One `ModelConfig` entry: where a model's versions live and which of them to serve."""

    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    """The batching parameters file mapped onto the shared batcher, plus how many batches run at once."""

    config: BatchingConfig
    num_batch_threads: int


def read_model_config_file(path: Path) -> list[ModelConfig]:
    """Parses a `--model_config_file` (a text-format `ModelServerConfig`)."""
    return parse_model_server_config(_read(path), source=str(path), base_dir=Path.cwd())


def parse_model_server_config(text: str, *, source: str, base_dir: Path) -> list[ModelConfig]:
    message = model_server_config_pb2.ModelServerConfig()
    _parse(text, message, source)
    return models_from_proto(message, source=source, base_dir=base_dir)


def models_from_proto(message: Any, *, source: str, base_dir: Path) -> list[ModelConfig]:
    """The model list of a `ModelServerConfig` message (a file's, or a ReloadConfigRequest's)."""
    if message.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported, use model_config_list")
    models = [
        _model(c, f"{source}: config[{i}]", base_dir) for i, c in enumerate(message.model_config_list.config)
    ]
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{source}: model name '{duplicates[0]}' is configured more than once")
    return models


def single_model(name: str, base_path: str) -> list[ModelConfig]:
    """The model list of `--model_name` / `--model_base_path`: one model, the latest version."""
    if not name:
        raise ConfigError("--model_name must not be empty")
    return [ModelConfig(name, Path(base_path))]


def _model(config: Any, where: str, base_dir: Path) -> ModelConfig:
    if not config.name:
        raise ConfigError(f"{where}: 'name' is required")
    where = f"{where} ('{config.name}')"
    if not config.base_path:
        raise ConfigError(f"{where}: 'base_path' is required")
    if config.model_platform not in ("", "tensorflow"):
        raise ConfigError(
            f"{where}: model_platform '{config.model_platform}' is not supported, only 'tensorflow'"
        )
    policy = _policy(config.model_version_policy, where)
    for label, version in config.version_labels.items():
        if not label or not label.replace("_", "a").isalnum() or not label.isascii():
            raise ConfigError(f"{where}: version label '{label}' must match [a-zA-Z0-9_]+")
        if version < 1:
            raise ConfigError(f"{where}: version label '{label}' points at version {version}")
    return ModelConfig(config.name, base_dir / config.base_path, policy, dict(config.version_labels))


def _policy(policy: Any, where: str) -> VersionPolicy:
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy("all")
    if choice == "specific":
        versions = frozenset(policy.specific.versions)
        if not versions:
            raise ConfigError(f"{where}: model_version_policy specific must list at least one version")
        return VersionPolicy("specific", versions=versions)
    if choice == "latest":
        count = policy.latest.num_versions or 1  # unset means 1, as in TF Serving
        if count < 1:
            raise ConfigError(f"{where}: model_version_policy latest num_versions must be >= 1")
        return VersionPolicy("latest", count=count)
    return VersionPolicy()


def read_batching_file(path: Path | None) -> BatchingOptions:
    """Parses a `--batching_parameters_file` (None: every default)."""
    text = "" if path is None else _read(path)
    return parse_batching(text, source=str(path) if path else "batching defaults")


def parse_batching(text: str, *, source: str) -> BatchingOptions:
    """Maps `BatchingParameters` onto the shared batcher's `BatchingConfig`.

    - `max_batch_size` -> `max_batch_size`; `allowed_batch_sizes` -> the buckets (each traced at load;
      TF Serving requires the last to equal max_batch_size, and so do we); without them, powers of two
      up to max_batch_size.
    - `batch_timeout_micros` -> `max_queue_delay_ms`. Our batcher also runs at once when the model is
      idle (`dispatch_when_idle`), so a lone request never waits the timeout, where TF Serving's does.
    - `max_enqueued_batches` -> `max_queue_size` = max_enqueued_batches x max_batch_size requests: our
      queue counts requests, TF Serving's counts batches; the two agree when requests are one row.
    - `num_batch_threads` -> batches run at once (runner threads on the one model).
    - Larger requests are always split (as `enable_large_batch_splitting`); `max_execution_batch_size`
      must then equal max_batch_size; `pad_variable_length_inputs` is not supported.
    """
    message = BatchingParameters()
    _parse(text, message, source)
    max_batch = _wrapped(message, "max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    if max_batch < 1:
        raise ConfigError(f"{source}: max_batch_size must be >= 1, got {max_batch}")
    timeout = _wrapped(message, "batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS)
    if timeout < 0:
        raise ConfigError(f"{source}: batch_timeout_micros must be >= 0, got {timeout}")
    enqueued = _wrapped(message, "max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES)
    if enqueued < 1:
        raise ConfigError(f"{source}: max_enqueued_batches must be >= 1, got {enqueued}")
    threads = _wrapped(message, "num_batch_threads", DEFAULT_NUM_BATCH_THREADS)
    if threads < 1:
        raise ConfigError(f"{source}: num_batch_threads must be >= 1, got {threads}")
    execution = _wrapped(message, "max_execution_batch_size", max_batch)
    if execution != max_batch:
        raise ConfigError(
            f"{source}: max_execution_batch_size {execution} differs from max_batch_size {max_batch}; "
            "this runtime splits large requests into max_batch_size pieces, set only max_batch_size"
        )
    if message.pad_variable_length_inputs:
        raise ConfigError(f"{source}: pad_variable_length_inputs is not supported by this runtime")
    buckets = tuple(message.allowed_batch_sizes) or default_buckets(max_batch)
    if list(buckets) != sorted(set(buckets)) or buckets[0] < 1 or buckets[-1] != max_batch:
        raise ConfigError(
            f"{source}: allowed_batch_sizes must increase, be >= 1 and end at max_batch_size {max_batch}, "
            f"got {list(buckets)}"
        )
    config = BatchingConfig(
        max_batch_size=max_batch,
        buckets=buckets,
        max_queue_delay_ms=timeout / 1000.0,
        max_queue_size=enqueued * max_batch,
    )
    return BatchingOptions(config, threads)


def read_monitoring_file(path: Path | None) -> str | None:
    """The Prometheus path a `--monitoring_config_file` enables, or None (no file, or not enabled)."""
    if path is None:
        return None
    source = str(path)
    message = MonitoringConfig()
    _parse(_read(path), message, source)
    prometheus = message.prometheus_config
    if not prometheus.enable:
        return None
    metrics_path = prometheus.path or DEFAULT_METRICS_PATH
    if not metrics_path.startswith("/"):
        raise ConfigError(f"{source}: prometheus_config path must start with '/', got '{metrics_path}'")
    return metrics_path


def _wrapped(message: Any, name: str, default: int) -> int:
    return int(getattr(message, name).value) if message.HasField(name) else default


def _read(path: Path) -> str:
    try:
        return Path(os.fspath(path)).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _parse(text: str, message: Any, source: str) -> None:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(f"{source}: {exc}") from None

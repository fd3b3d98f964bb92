"""TF Serving's config files: the model list and version policy, batching parameters, monitoring."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from runtimes.tfserving import config
from runtimes.tfserving.config import VersionPolicy


def models(text: str) -> list[config.ModelConfig]:
    return config.parse_model_server_config(text, source="models.config", base_dir=Path("/base"))


def test_model_config_list_with_policies_and_labels() -> None:
    """Every documented field is read; a relative base_path is taken from the working directory."""
    parsed = models(
        """model_config_list {
          config { name: 'a' base_path: '/models/a' model_platform: 'tensorflow'
                   model_version_policy { specific { versions: 42 versions: 43 } }
                   version_labels { key: 'stable' value: 42 } version_labels { key: 'canary' value: 43 } }
          config { name: "b" base_path: "rel/b" model_version_policy { latest { num_versions: 2 } } }
          config { name: "c" base_path: "/c" model_version_policy { all {} } }
          config { name: "d" base_path: "/d" }
        }"""
    )
    assert [m.name for m in parsed] == ["a", "b", "c", "d"]
    assert parsed[0].policy == VersionPolicy("specific", versions=frozenset({42, 43}))
    assert parsed[0].labels == {"stable": 42, "canary": 43}
    assert parsed[1].base_path == Path("/base/rel/b") and parsed[1].policy == VersionPolicy("latest", 2)
    assert parsed[2].policy == VersionPolicy("all")
    assert parsed[3].policy == VersionPolicy("latest", 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' base_path: '/a' bogus: 1 } }", 'no field named "bogus"'),
        ("model_config_list { config { base_path: '/a' } }", "'name' is required"),
        ("model_config_list { config { name: 'a' } }", "'base_path' is required"),
        ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'pytorch' } }", "pytorch"),
        (
            "model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
            "more than once",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' "
            "version_labels { key: 'a-b' value: 1 } } }",
            "a-b",
        ),
        (
            "model_config_list { config { name: 'a' base_path: '/a' model_version_policy { specific {} } } }",
            "at least one version",
        ),
    ],
)
def test_bad_model_configs_name_the_problem(text: str, message: str) -> None:
    """A bad config is refused with the file name and what is wrong."""
    with pytest.raises(ConfigError, match=r"models\.config") as err:
        models(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("policy", "on_disk", "selected"),
    [
        (VersionPolicy(), [1, 3, 2], {3}),
        (VersionPolicy("latest", 2), [1, 3, 2], {2, 3}),
        (VersionPolicy("latest", 5), [1], {1}),
        (VersionPolicy("all"), [1, 3], {1, 3}),
        (VersionPolicy("specific", versions=frozenset({2, 9})), [1, 2, 3], {2}),
        (VersionPolicy(), [], set()),
    ],
)
def test_version_policy_selection(policy: VersionPolicy, on_disk: list[int], selected: set[int]) -> None:
    """latest N / all / specific pick among the versions present on disk."""
    assert policy.select(on_disk) == selected


@pytest.mark.parametrize(
    ("text", "max_batch", "buckets", "delay_ms", "queue", "threads"),
    [
        ("", 1000, (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000), 0.0, 10000, 1),
        (
            "max_batch_size { value: 32 } batch_timeout_micros { value: 1000 }",
            32,
            (1, 2, 4, 8, 16, 32),
            1.0,
            320,
            1,
        ),
        (
            "max_batch_size { value: 32 } # comment\nallowed_batch_sizes: 8 allowed_batch_sizes: 32\n"
            "max_enqueued_batches { value: 100 } num_batch_threads { value: 4 }",
            32,
            (8, 32),
            0.0,
            3200,
            4,
        ),
        (
            "max_batch_size: { value: 6 }, enable_large_batch_splitting { value: true }",
            6,
            (1, 2, 4, 6),
            0.0,
            60,
            1,
        ),
    ],
)
def test_batching_parameters_map_onto_the_shared_batcher(
    text: str, max_batch: int, buckets: tuple[int, ...], delay_ms: float, queue: int, threads: int
) -> None:
    """max_batch_size, allowed_batch_sizes (buckets), timeout (delay), enqueued batches (queue), threads."""
    options = config.parse_batching(text, source="batching.config")
    assert options.config.max_batch_size == max_batch
    assert options.config.buckets == buckets
    assert options.config.max_queue_delay_ms == delay_ms
    assert options.config.max_queue_size == queue
    assert options.num_batch_threads == threads


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 8 } max_batch_sise { value: 8 }", 'no field named "max_batch_sise"'),
        ("max_batch_size: 8", "max_batch_size"),
        ("max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "end at max_batch_size 8"),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 "
            "allowed_batch_sizes: 8",
            "must increase",
        ),
        ("max_enqueued_batches { value: 0 }", "max_enqueued_batches"),
        ("pad_variable_length_inputs: true", "pad_variable_length_inputs"),
        ("max_batch_size { value: 8 } max_execution_batch_size { value: 4 }", "max_execution_batch_size"),
    ],
)
def test_bad_batching_parameters_name_the_key(text: str, message: str) -> None:
    """The parameters file is parsed strictly: the error names the file and the bad key."""
    with pytest.raises(ConfigError, match=r"batching\.config") as err:
        config.parse_batching(text, source="batching.config")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("prometheus_config { enable: true }", "/monitoring/prometheus/metrics"),
        ('prometheus_config { enable: true, path: "/metrics" }', "/metrics"),
        ('prometheus_config { enable: false, path: "/metrics" }', None),
        ("", None),
    ],
)
def test_monitoring_config(tmp_path: Path, text: str, path: str | None) -> None:
    """The Prometheus path is served only when the monitoring config enables it."""
    file = tmp_path / "monitoring.config"
    file.write_text(text)
    assert config.read_monitoring_file(file) == path


def test_single_model_flags() -> None:
    """--model_name/--model_base_path: one model, latest version, no labels."""
    (model,) = config.single_model("m", "/models/m")
    assert model == config.ModelConfig("m", Path("/models/m"))

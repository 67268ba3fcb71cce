"""Rendering results for people: aligned text tables, Markdown tables, number formatting."""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deploykit.errors import optional_import
from deploykit.io.outputs import atomic_output
from deploykit.metrics.table import METRICS


def fmt(value: object, digits: int = 4) -> str:
    """Numbers in a compact, readable form: 1.23e-07, 0.9999, 123.4, inf."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{max(digits - 2, 1)}e}"
        # significant digits below 10, so 1.0 and 0.99999 (metrics of a perfect match) both read "1"
        return f"{value:.{digits}g}" if abs(value) < 10 else f"{value:,.{max(digits - 3, 1)}f}"
    return str(value)


def metrics_text(values: Mapping[str, float], reference: str) -> str:
    """Metrics for a sentence, each with its unit and what it was measured against: 'pixel_agreement 0.996, miou
    0.99 against PyTorch; miou_gt 0.164, miou_drop 0.02 points against the labels' (--labels)."""
    def listed(names: list[str]) -> str:
        return ", ".join(f"{name} {fmt(values[name])}" + (f" {METRICS[name].unit}" if name in METRICS and
                                                           METRICS[name].unit else "") for name in names)
    truth = [name for name in values if name in METRICS and METRICS[name].needs_labels]
    against = [name for name in values if name not in truth]
    return "; ".join([*([f"{listed(against)} against {reference}"] if against else []),
                      *([f"{listed(truth)} against the labels"] if truth else [])])


def printable(text: str) -> str:
    """`text` with its control characters (a newline in a file or module name) shown as Python writes them in a
    string, so one name stays on one line in every report and reads the same in each."""
    if not any(unicodedata.category(ch) == "Cc" for ch in text):
        return text
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in text)


# What Markdown would read as markup inside a line, escaped only there so report.md stays readable as text
# ("X < Y", "A & B", "deploykit[plots]" unchanged): a backslash escape, an HTML tag or entity, emphasis, a code
# span, strikethrough, a heading's closing #s, a link's "](", and `_` only where it can open or close emphasis
# (never inside a word: pixel_agreement stays as written). `|` only in a table, where it breaks a cell.
_MARKDOWN_SPECIAL = (r"\\(?=[!-/:-@\[-`{-~]|$)|<(?=[A-Za-z/!?])|&(?=#?[A-Za-z0-9]+;)|[*`~#]|\](?=[(\[])"
                     r"|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_INLINE, _CELL = re.compile(_MARKDOWN_SPECIAL), re.compile(_MARKDOWN_SPECIAL + r"|\|")


def markdown_text(text: str, *, cell: bool = False) -> str:
    """Plain text for Markdown (a table cell's with `cell`): read back by a CommonMark renderer as exactly
    `printable(text)`, never markup."""
    return (_CELL if cell else _INLINE).sub(lambda m: "\\" + m.group(), printable(text))


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "| " + " | ".join(markdown_text(h, cell=True) for h in headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(markdown_text(fmt(c), cell=True) for c in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def require_matplotlib() -> Any:
    """pyplot on the file-only Agg backend; matplotlib is the optional `plots` extra."""
    plots, install = "plots", "pip install 'deploykit[plots]' (or pass --no-plots)"
    optional_import("matplotlib", plots, install).use("Agg")  # files only; never a window
    plt = optional_import("matplotlib.pyplot", plots, install)
    return plt


def save_png(fig: Any, path: str | os.PathLike[str], *, force: bool) -> Path:
    """Write a figure atomically and release it."""
    with atomic_output(path, force=force) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    require_matplotlib().close(fig)
    return Path(path)

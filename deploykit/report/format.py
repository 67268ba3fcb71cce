"""Rendering results for people: aligned text tables, Markdown tables, number formatting."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deploykit.errors import BackendUnavailable
from deploykit.io.outputs import atomic_output


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


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "| " + " | ".join(headers) + " |"
    rule = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def require_matplotlib() -> Any:
    """pyplot on the file-only Agg backend; matplotlib is the optional `plots` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never a window
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise BackendUnavailable("plots need matplotlib: pip install 'deploykit[plots]' (or pass --no-plots)") \
            from exc
    return plt


def save_png(fig: Any, path: str | os.PathLike[str], *, force: bool) -> Path:
    """Write a figure atomically and release it."""
    with atomic_output(path, force=force) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    require_matplotlib().close(fig)
    return Path(path)

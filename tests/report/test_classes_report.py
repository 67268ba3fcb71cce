"""Per-class damage tables: the hand-checked maps of tests/parity/test_classes.py, as text and Markdown."""

from __future__ import annotations

import numpy as np

from deploykit.parity.classes import ClassDamageResult, class_damage
from deploykit.report.classes import class_table, damage_blocks
from deploykit.report.document import to_markdown, to_text


def _result(with_truth: bool = False) -> ClassDamageResult:
    """fp16 equals the reference; int8 flips an edge column and one interior pixel (IoU 16/21 and 11/16)."""
    reference = np.zeros((4, 8), dtype=np.int64)
    reference[:, 4:] = 1
    candidate = reference.copy()
    candidate[:, 4] = 0
    candidate[0, 7] = 0
    truth = reference.copy() if with_truth else None
    return class_damage(reference, {"fp16": reference, "int8": candidate}, ground_truth=truth)


def test_summary_names_the_worst_classes_and_where_flips_lie() -> None:
    lines = to_text(damage_blocks(_result(), class_names=["background", "cat"])).splitlines()
    assert "share of flips on edges (≤2 px)" in lines[0]  # a share of the flipped pixels, not a count
    assert lines[2].split() == ["fp16", "1", "1", "-", "0.5", "0", "/", "0", "none"]  # no flips: no share
    assert lines[3].split()[:8] == ["int8", "0.8438", "0.7247", "0.8", "0.5", "0.25", "/", "0.0625"]
    assert lines[3].endswith("1 cat (-0.312), 0 background (-0.238)")
    assert len(lines) == 4  # no ground-truth table without labels


def test_tables_with_ground_truth_in_markdown() -> None:
    result = _result(with_truth=True)
    summary = [line for line in to_markdown(damage_blocks(result)).splitlines() if line]
    assert summary[4] == "Against the ground-truth labels:"
    assert summary[7:] == ["| reference | 1 | 1 | - |", "| fp16 | 1 | 1 | none |",
                           "| int8 | 0.8438 | 0.7247 | class 1 (-0.312), class 0 (-0.238) |"]
    table = to_markdown([class_table(result)]).splitlines()
    assert table[0] == ("| class | reference share | fp16 IoU | fp16 share | int8 IoU | int8 share | "
                        "reference IoU vs labels | fp16 IoU vs labels | int8 IoU vs labels |")
    assert table[2:] == ["| class 0 | 0.5 | 1 | 0.5 | 0.7619 | 0.6562 | 1 | 1 | 0.7619 |",
                         "| class 1 | 0.5 | 1 | 0.5 | 0.6875 | 0.3438 | 1 | 1 | 0.6875 |"]

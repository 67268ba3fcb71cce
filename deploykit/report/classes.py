"""Per-class damage for people (issue 13, item 3): a summary per candidate and a table per class, as blocks of
the document model (deploykit.report.document renders them as text, Markdown or HTML)."""

from __future__ import annotations

from collections.abc import Sequence

from deploykit.parity.classes import BOUNDARY_WIDTH, CandidateDamage, ClassDamageResult
from deploykit.report.document import Block, Paragraph, Table, table
from deploykit.report.format import fmt


def class_name(index: int, class_names: Sequence[str] | None) -> str:
    """`3 rocket` with names (model metadata, ModelMetadata.class_names), else `class 3`."""
    return f"{index} {class_names[index]}" if class_names is not None and index < len(class_names) \
        else f"class {index}"


def _worst(damage: CandidateDamage, class_names: Sequence[str] | None, baseline: CandidateDamage | None) -> str:
    worst = damage.worst(3, baseline)
    return ", ".join(f"{class_name(k, class_names)} (-{fmt(loss, 3)})" for k, loss in worst) or "none"


def damage_blocks(result: ClassDamageResult, class_names: Sequence[str] | None = None) -> list[Block]:
    """The summary tables: one row per candidate with its agreement, mIoU against
    the reference, where its flips lie and the classes that lose most (1 - IoU); with ground truth, a second
    table scoring every model against it (a class's loss: the reference's IoU minus the candidate's)."""
    headers = ["candidate", "pixel agree", "mIoU vs reference", f"share of flips on edges (≤{BOUNDARY_WIDTH} px)",
               "edge band share", "flip rate edge / interior", "classes losing most"]
    rows: list[list[object]] = []
    for damage in result.candidates:
        split = damage.boundary
        rates = f"{fmt(split.boundary_rate)} / {fmt(split.interior_rate)}" if split else "-"
        # no flip: no share of them (not 0)
        on_edges = split.boundary_share if split is not None and damage.pixel_agreement < 1.0 else None
        rows.append([damage.label, damage.pixel_agreement, damage.miou, on_edges,
                     split.band_share if split else None, rates, _worst(damage, class_names, None)])
    blocks: list[Block] = [table(headers, rows)]
    baseline = result.baseline()
    if baseline is not None:
        truth_rows: list[list[object]] = [[d.label, d.pixel_agreement, d.miou,
                                           "-" if d is baseline else _worst(d, class_names, baseline)]
                                          for d in result.labels]
        blocks += [Paragraph("Against the ground-truth labels:"),
                   table(["model", "pixel accuracy", "mIoU", "classes losing most vs the reference"], truth_rows)]
    return blocks


def class_table(result: ClassDamageResult, class_names: Sequence[str] | None = None) -> Table:
    """One row per class present: the reference's pixel share, each candidate's IoU and pixel share, and with
    ground truth each model's IoU against it."""
    indices = sorted({c.index for d in (*result.candidates, *result.labels) for c in d.classes})
    headers = ["class", "reference share"]
    for damage in result.candidates:
        headers += [f"{damage.label} IoU", f"{damage.label} share"]
    headers += [f"{d.label} IoU vs labels" for d in result.labels]
    rows = []
    for index in indices:
        reference = next((c for d in result.candidates for c in d.classes if c.index == index), None)
        row: list[object] = [class_name(index, class_names), reference.reference_share if reference else 0.0]
        for damage in result.candidates:
            found = next((c for c in damage.classes if c.index == index), None)
            row += [found.iou if found else None, found.candidate_share if found else 0.0]
        row += [d.iou(index) for d in result.labels]
        rows.append(row)
    return table(headers, rows)

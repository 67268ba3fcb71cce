"""Parity results for people: the terminal's text and the Markdown report, both from the same blocks
(deploykit.report.document)."""

from __future__ import annotations

from deploykit.metrics.table import METRICS, selected
from deploykit.parity.compare import CandidateResult, ParityResult
from deploykit.parity.gates import DEFAULT_GATES
from deploykit.report.document import Block, Bullets, Code, Heading, Paragraph, Table, table, to_markdown, to_text
from deploykit.report.format import fmt

NUMERIC_COLUMNS = tuple(m.name for m in METRICS.values() if m.task is None and m.column)
LOCALIZE_HEADERS = ["rank", "ONNX node", "op", "PyTorch module", "rel. error", "input error", "growth"]


def metric_columns(result: ParityResult) -> tuple[str, ...]:
    """The numeric columns, then the task's shown metrics (those against ground truth only with --labels)."""
    task = selected(task=result.task, shown=True) if result.task else ()
    return NUMERIC_COLUMNS + tuple(m for m in task if result.reference_scores or not METRICS[m].needs_labels)


def summary_table(result: ParityResult) -> Table:
    columns = metric_columns(result)
    headers = ["candidate", "backend", "precision", "output", *(METRICS[m].title for m in columns), "verdict"]
    rows = [[candidate.label, candidate.backend, candidate.precision, output.name,
             *(output.metrics.get(m) for m in columns), "pass" if output.passed else "FAIL"]
            for candidate in result.candidates for output in candidate.outputs]
    return table(headers, rows)


def localization_blocks(candidate: CandidateResult) -> list[Block]:
    if candidate.localize_note:
        return [Paragraph(f"localize {candidate.label}: {candidate.localize_note}")]
    found = candidate.localization
    if found is None:
        return []
    graph = "" if found.candidate == candidate.label else f" (the graph it was built from, {found.candidate})"
    lines = [f"localize {candidate.label}{graph}: {found.compared} intermediate tensors compared with the FP32 "
             f"reference ({found.unmatched} without a counterpart), tolerance {fmt(found.tolerance)} on the "
             "relative error"]
    if found.first is None:
        lines.append("no intermediate tensor crosses the tolerance; the divergence is in the last nodes or "
                     "spread thinly (see growth below)")
    else:
        first = found.first
        lines.append(f"first node beyond tolerance: {first.node} ({first.op_type}) from PyTorch module "
                     f"{first.module or '(unknown)'}: relative error {fmt(first.error)}, its inputs' "
                     f"{fmt(first.input_error)}{_through(first.through)}")
    rows = [[i + 1, n.node, n.op_type, n.module or "-", n.error, n.input_error, n.growth]
            for i, n in enumerate(found.top)]
    lines.append(f"top {len(rows)} nodes by error growth (error of the output relative to error of the inputs):")
    return [Bullets(tuple(lines)), table(LOCALIZE_HEADERS, rows)]  # one line each


def _through(nodes: tuple[str, ...], shown: int = 3) -> str:
    """The reference nodes the candidate computes with the first one, the nearest few (all are in --json)."""
    if not nodes:
        return ""
    more = f" and {len(nodes) - shown} more" if len(nodes) > shown else ""
    return (f"; in the candidate it is computed together with {', '.join(nodes[-shown:])}{more} (no tensor of "
            "their own there): the error may enter in any of them")


def _truth_lines(result: ParityResult) -> list[str]:
    """The reference's own values against the ground truth (--labels)."""
    return [f"reference {METRICS[m].title} ({name}): {fmt(value)}" for name, scores in result.reference_scores.items()
            for m, value in scores.items()]


def text_report(result: ParityResult) -> str:
    head = [f"reference: {result.reference} ({result.reference_backend}); task: {result.task or 'unknown'}",
            f"inputs: {result.inputs}", *_truth_lines(result)]
    blocks: list[Block] = [Bullets(tuple(head)), summary_table(result)]  # one line each, as to_text shows bullets
    failures = [f"FAIL {c.label}: {f}" for c in result.candidates for o in c.outputs for f in o.failures()]
    if failures:
        blocks.append(Bullets(tuple(failures)))
    if result.notes:
        blocks.append(Bullets(tuple(f"note: {note}" for note in result.notes)))
    for candidate in result.candidates:
        blocks += localization_blocks(candidate)
    return to_text(blocks)


def _gates_of(candidate: CandidateResult) -> str:
    return ", ".join(sorted({check.gate.describe() for o in candidate.outputs for check in o.checks})) or "none"


def markdown_report(result: ParityResult) -> str:
    verdict = "pass" if result.passed else "FAIL"
    gates = [(Code(c.label), f" ({c.precision}): {_gates_of(c)}") for c in result.candidates]
    blocks: list[Block] = [
        Heading(f"Parity report: {verdict}", level=1),
        Bullets((("Reference: ", Code(result.reference), f" ({result.reference_backend})"),
                 f"Task: {result.task or 'unknown'}", f"Inputs: {result.inputs}", f"Verdict: {result.summary()}",
                 *(f"Note: {note}" for note in result.notes))),
        Heading("Outputs"), summary_table(result), Heading("Gates"), Bullets(tuple(gates)),
        Paragraph("Defaults per precision (deploykit.parity.gates): "
                  + "; ".join(f"{p}: {', '.join(g)}" for p, g in DEFAULT_GATES.items()))]
    for candidate in result.candidates:
        extra = localization_blocks(candidate)
        if extra:
            blocks += [Heading(("Localisation: ", Code(candidate.label))), *extra]
    return to_markdown(blocks)

"""Parity results for people: a text table for the terminal and a Markdown report."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deploykit.metrics.table import METRICS, task_metric_names
from deploykit.metrics.tasks import TASKS
from deploykit.parity.compare import CandidateResult, ParityResult
from deploykit.parity.gates import DEFAULT_GATES
from deploykit.report.format import fmt, markdown_table, text_table

NUMERIC_COLUMNS = tuple((m.name, m.title) for m in METRICS.values() if m.task is None and m.column)
TASK_COLUMNS = {task: tuple((m, METRICS[m].title) for m in task_metric_names(task) if METRICS[m].column)
                for task in TASKS}
LOCALIZE_HEADERS = ["rank", "ONNX node", "op", "PyTorch module", "rel. error", "input error", "growth"]

Table = Callable[[Sequence[str], Sequence[Sequence[object]]], str]


def _columns(result: ParityResult) -> tuple[tuple[str, str], ...]:
    task = tuple(c for c in TASK_COLUMNS.get(result.task or "", ())
                 if result.reference_miou_gt or not METRICS[c[0]].needs_labels)  # ground truth: with --labels
    return NUMERIC_COLUMNS + task


def summary_table(result: ParityResult, table: Table = text_table) -> str:
    columns = _columns(result)
    headers = ["candidate", "backend", "precision", "output", *(title for _, title in columns), "verdict"]
    rows = []
    for candidate in result.candidates:
        for output in candidate.outputs:
            values = [output.metrics.get(key) for key, _ in columns]
            rows.append([candidate.label, candidate.backend, candidate.precision, output.name, *values,
                         "pass" if output.passed else "FAIL"])
    return table(headers, rows)


def localization_lines(candidate: CandidateResult, table: Table = text_table) -> list[str]:
    if candidate.localize_note:
        return [f"localize {candidate.label}: {candidate.localize_note}"]
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
                     f"{fmt(first.input_error)}")
    rows = [[i + 1, n.node, n.op_type, n.module or "-", n.error, n.input_error, n.growth]
            for i, n in enumerate(found.top)]
    lines.append(f"top {len(rows)} nodes by error growth (error of the output relative to error of the inputs):")
    lines.append(table(LOCALIZE_HEADERS, rows))
    return lines


def _truth_lines(result: ParityResult) -> list[str]:
    return [f"reference mIoU vs labels ({name}): {fmt(value)}" for name, value in result.reference_miou_gt.items()]


def text_report(result: ParityResult) -> str:
    lines = [f"reference: {result.reference} ({result.reference_backend}); task: {result.task or 'unknown'}",
             f"inputs: {result.inputs}", *_truth_lines(result), "", summary_table(result)]
    failures = [(c.label, f) for c in result.candidates for o in c.outputs for f in o.failures()]
    if failures:
        lines += ["", *(f"FAIL {label}: {failure}" for label, failure in failures)]
    if result.notes:
        lines += ["", *(f"note: {note}" for note in result.notes)]
    for candidate in result.candidates:
        extra = localization_lines(candidate)
        if extra:
            lines += ["", *extra]
    return "\n".join(lines)


def markdown_report(result: ParityResult) -> str:
    verdict = "pass" if result.passed else "FAIL"
    lines = [f"# Parity report: {verdict}", "", f"- Reference: `{result.reference}` ({result.reference_backend})",
             f"- Task: {result.task or 'unknown'}", f"- Inputs: {result.inputs}", f"- Verdict: {result.summary()}",
             *(f"- Note: {note}" for note in result.notes),
             "", "## Outputs", "", summary_table(result, markdown_table), "", "## Gates", ""]
    for candidate in result.candidates:
        checks = {c.gate.describe() for o in candidate.outputs for c in o.checks}
        lines.append(f"- `{candidate.label}` ({candidate.precision}): {', '.join(sorted(checks)) or 'none'}")
    lines += ["", "Defaults per precision (deploykit.parity.gates): "
              + "; ".join(f"{p}: {', '.join(g)}" for p, g in DEFAULT_GATES.items())]
    for candidate in result.candidates:
        extra = localization_lines(candidate, markdown_table)
        if extra:
            lines += ["", f"## Localisation: `{candidate.label}`", "", *extra]
    return "\n".join(lines) + "\n"

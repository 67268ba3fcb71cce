"""The deploy report: Markdown, a self-contained HTML page (plots inlined), PNG plots and summary.json, all
rendered from one DeployResult (deploykit.pipeline.results) through one block list (deploykit.report.document)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deploykit.backends.base import REFERENCE
from deploykit.io.outputs import write_json, write_text
from deploykit.parity.metrics import METRICS
from deploykit.precision.table import BASELINE
from deploykit.report.document import Block, Bullets, Heading, Image, Note, Paragraph, table, to_html, to_markdown
from deploykit.report.format import fmt

if TYPE_CHECKING:
    from deploykit.bench.run import BenchReport
    from deploykit.parity.compare import ParityResult
    from deploykit.pipeline.results import DeployResult

TASK_KEYS = tuple(m.name for m in METRICS.values() if m.task is not None)


def latency_rows(bench: BenchReport) -> list[list[object]]:
    return [[r.backend, r.precision, r.batch, "x".join(map(str, r.input_shape)), r.latency.median, r.latency.p90,
             r.latency.p99, r.images_per_s, r.achieved_gflops, r.efficiency_percent] for r in bench.results]


def _ratio_rows(bench: BenchReport) -> list[list[object]]:
    results = bench.results
    base = next((r for r in results if r.backend == REFERENCE.name), None)
    fp32 = next((r for r in results if r.precision == BASELINE.name and r.backend != REFERENCE.name), None)
    return [[f"{r.backend} {r.precision}", r.latency.median,
             base.latency.median / r.latency.median if base else None,
             fp32.latency.median / r.latency.median if fp32 else None] for r in results]


def accuracy_rows(parity: ParityResult) -> list[list[object]]:
    rows: list[list[object]] = []
    for cand in parity.candidates:
        for out in cand.outputs:
            m = out.metrics
            rows.append([cand.precision, out.name, m.get("cosine"), m.get("max_abs"), m.get("snr_db"),
                         ", ".join(f"{k} {fmt(m[k])}" for k in TASK_KEYS if k in m) or "-",
                         "pass" if out.passed else "FAIL"])
    return rows


def blocks(result: DeployResult, plots: dict[str, Path]) -> list[Block]:
    parity, bench, layers = result.parity, result.bench, result.layers
    out: list[Block] = [
        Heading(f"deploykit report: {result.model}", 1),
        Paragraph(f"Options {result.options or '(defaults)'}; weights {result.weights or '(builder initialisation)'}; "
                  f"backend {result.backend} ({result.backend_note})."),
        *([Paragraph(f"**Warning: {result.weights_note}.**")] if result.weights_note else []),
        Heading("Accuracy against PyTorch"),
        Paragraph(f"{parity.input_count} inputs: {parity.inputs}. {parity.summary()}."),
        table(["precision", "output", "cosine", "max abs", "SNR dB", "task metrics", "verdict"],
              accuracy_rows(parity)),
        Heading("Latency"),
        table(["backend", "precision", "batch", "input", "median ms", "p90 ms", "p99 ms", "images/s", "GFLOP/s",
               "% GEMM peak"], latency_rows(bench)),
        table(["run", "median ms", "speed-up vs PyTorch", "speed-up vs fp32"], _ratio_rows(bench)),
    ]
    if bench.peaks:
        peaks = bench.peaks
        out.append(Paragraph(f"Machine peaks measured in this run: fp32 GEMM {fmt(peaks['gemm_gflops'])} GFLOP/s, "
                             f"memory copy {fmt(peaks['copy_gbps'])} GB/s ({peaks['threads']} threads)."))
    out += [Note(note) for note in bench.notes]
    out.append(Heading("Nodes kept in higher precision"))
    kept_lines = []
    for build in result.builds:
        if build.precision_onnx is None:
            continue
        kept = build.kept
        names = ", ".join(f"{k.get('name')} ({k.get('op_type')}: {k.get('reason', '')})" for k in kept[:12])
        kept_lines.append(f"{build.precision}: {len(kept)} kept" + (f": {names}" if kept else "")
                          + (" …" if len(kept) > 12 else ""))
    out.append(Bullets(tuple(kept_lines)))
    out.append(Heading("Per-layer error"))
    if layers.nodes:
        worst = sorted(layers.nodes, key=lambda n: -n.growth)[:5]
        out += [Paragraph(f"Worst candidate: {layers.candidate} ({layers.precision}); nodes with the largest error "
                          "growth:"),
                table(["node", "op", "PyTorch module", "error", "growth"],
                      [[n.node, n.op_type, n.module or "-", n.error, n.growth] for n in worst])]
    else:
        out.append(Paragraph(layers.note or "no per-layer data"))
    out += [Image(name, path) for name, path in plots.items()]
    out += [Heading("Steps"), table(["step", "skipped (unchanged)", "seconds"],
                                    [[s.name, s.skipped, round(s.seconds, 2)] for s in result.steps])]
    return out


def markdown(result: DeployResult, plots: dict[str, Path]) -> str:
    return to_markdown(blocks(result, plots))


def write_report(result: DeployResult, out: Path) -> dict[str, Path]:
    """Write report.md, report.html, summary.json and the plots into `out`; returns the files."""
    from deploykit.report.deploy_plots import make_plots

    plots = make_plots(result, out)
    parts = blocks(result, plots)
    files = {"markdown": write_text(out / "report.md", to_markdown(parts), force=True),
             "html": write_text(out / "report.html", to_html(parts, "deploykit report"), force=True),
             "json": write_json(out / "summary.json", result.to_dict(), force=True)}
    return {**files, **plots}

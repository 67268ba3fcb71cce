"""The deploy report: Markdown, a self-contained HTML page (plots inlined), PNG plots and summary.json, all
rendered from one DeployResult (deploykit.pipeline.results) through one block list (deploykit.report.document)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit.bench.harness import speedup
from deploykit.bench.stats import Ratio
from deploykit.io.outputs import write_json, write_text
from deploykit.metrics.table import METRICS, selected
from deploykit.parity.classes import BOUNDARY_WIDTH, CandidateDamage, ClassDamageResult
from deploykit.pipeline.frontier import MAX_EXTRAPOLATION, frontier
from deploykit.pipeline.plots import FILES as PLOT_FILES
from deploykit.pipeline.plots import make_plots, nothing_lost
from deploykit.pipeline.verdict import artifact_run, reference_run
from deploykit.precision.int8_choices import describe as describe_int8
from deploykit.precision.table import BASELINE
from deploykit.report.classes import class_table, damage_blocks
from deploykit.report.document import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Note,
    Paragraph,
    Table,
    table,
    to_html,
    to_markdown,
)
from deploykit.report.format import fmt, metrics_text
from deploykit.report.masks import pictures_png, write_png
from deploykit.report.parity import metric_columns
from deploykit.types import TASKS

if TYPE_CHECKING:
    from deploykit.bench.run import BenchReport
    from deploykit.parity.compare import ParityResult
    from deploykit.pipeline.results import DeployResult, LayersResult

TASK_KEYS = selected()


LATENCY_HEADERS = ["backend", "precision", "batch", "input", "median ms", "p10-p90 ms", "p99 ms", "images/s",
                   "GFLOP/s", "% GEMM peak"]


def _spread(low: float | None, high: float | None) -> str:
    return f"{fmt(low)}-{fmt(high)}" if low is not None and high is not None else "-"


def latency_rows(bench: BenchReport) -> list[list[object]]:
    return [[r.backend, r.precision, r.batch, "x".join(map(str, r.input_shape)), r.latency.median,
             _spread(r.latency.p10, r.latency.p90), r.latency.p99, r.images_per_s, r.achieved_gflops,
             r.efficiency_percent] for r in bench.results]


RATIO_HEADERS = ["run", "batch", "median ms", "speed-up vs PyTorch (per image)", "speed-up vs fp32 (per image)"]


def _ratio_rows(bench: BenchReport) -> list[list[object]]:
    """Each run's speed-up over PyTorch eager and over the FP32 artifact (at their smallest batch), with the
    interval of the ratio. The batch is a column of its own: with --input-shape N,... each run is timed at batch 1
    and N, and two rows named alike ('torch fp32') could not be told apart."""
    base = reference_run(bench.results)
    fp32 = artifact_run(bench.results, BASELINE.name)
    return [[f"{r.backend} {r.precision}", r.batch, r.latency.median, speedup(base, r).text() if base else "-",
             speedup(fp32, r).text() if fp32 else "-"] for r in bench.results]


def race_rows(result: DeployResult) -> list[list[object]]:
    """Every backend `--backend auto` raced per precision (deploykit.targets.race's record in the sidecar)."""
    rows: list[list[object]] = []
    for build in result.builds:
        record = build.sidecar.build_options.get("auto")
        if not isinstance(record, dict):
            continue
        spread = record.get("spread_ms") or {}
        ratios = record.get("ratios_to_chosen") or {}
        for name, median in sorted(record.get("medians_ms", {}).items(), key=lambda item: item[1]):
            ratio = Ratio.from_dict(ratios.get(name))
            low, high = spread.get(name) or (None, None)
            rows.append([build.precision, name, median, _spread(low, high),
                         "chosen" if name == record.get("chosen") else (ratio.text() if ratio else "-")])
    return rows


def latency_blocks(result: DeployResult, plot: Path | None = None) -> list[Block]:
    """The latency tables: every timed run with its spread, the speed-ups with their intervals, the backends
    raced at build time, how the timing ran (interleaved, the machine's load and peaks), and the plot."""
    bench = result.bench
    rounds = {len(r.samples_ms) for r in bench.results}
    how = (f"Timed on {bench.machine()}. PyTorch eager and every artifact were timed in one run, round-robin "
           "(one inference of each per round, the order rotating, an untimed pause between them), so a burst of "
           f"other work slows all alike; {'/'.join(map(str, sorted(rounds)))} rounds. Speed-ups are ratios of "
           "medians with their 95% bootstrap interval over rounds; two artifacts whose interval contains 1 are tied.")
    if bench.load is not None:
        how += f" Machine load: {bench.load.describe()}."
    out: list[Block] = [Heading("Latency"), Paragraph(how), table(LATENCY_HEADERS, latency_rows(bench)),
                        table(RATIO_HEADERS, _ratio_rows(bench))]
    raced = race_rows(result)
    if raced:
        out += [Paragraph((Code("--backend auto"), " built every ready CPU backend's artifact per precision and timed "
                           "them round-robin on one input at build time; the chosen one was kept:")),
                table(["precision", "backend", "median ms", "p10-p90 ms", "time over the chosen's"], raced)]
    if bench.peaks:
        peaks = bench.peaks
        out.append(Paragraph(f"Machine peaks measured in this run: fp32 GEMM {fmt(peaks['gemm_gflops'])} GFLOP/s, "
                             f"memory copy {fmt(peaks['copy_gbps'])} GB/s ({peaks['threads']} "
                             f"thread{'s' if peaks['threads'] != 1 else ''})."))
    busy = bench.load.warning() if bench.load else None
    out += [Note(_sentence(note)) for note in bench.notes if note != busy]  # that one is under the verdict
    return out + _image("latency", plot)


def _image(name: str, plot: Path | None) -> list[Block]:
    return [Image(name, plot)] if plot is not None else []


def accuracy_table(parity: ParityResult) -> Table:
    """Each candidate output's metrics (report.parity's columns: numeric, then the task's, each titled with its
    unit, those against ground truth with --labels) and its verdict."""
    columns = metric_columns(parity)
    return table(["precision", "output", *(METRICS[m].title for m in columns), "verdict"],
                 [[cand.precision, out.name, *(out.metrics.get(m) for m in columns), "pass" if out.passed else "FAIL"]
                  for cand in parity.candidates for out in cand.outputs])


def accuracy_plot_blocks(parity: ParityResult, plot: Path | None) -> list[Block]:
    """The plot of task agreement lost, or why there is none: a chart of bars of height 0 reads as missing data."""
    kept = nothing_lost(parity)
    if kept:
        return [Paragraph(f"No agreement lost to plot: every candidate's {', '.join(kept)} against PyTorch reads 1 "
                          "to the table's 4 significant digits (summary.json has the exact values).")]
    return _image("accuracy", plot)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def warnings(result: DeployResult) -> list[str]:
    """What qualifies the verdict's figures, under it in the report and before it in the summary: untrained
    weights (task metrics that measure ties), a machine busy while timing (milliseconds that move)."""
    busy = result.bench.load.warning() if result.bench.load else None
    return [note for note in (result.weights_note, busy) if note]


def verdict_blocks(result: DeployResult) -> list[Block]:
    """The answer first (pipeline.verdict): what to ship, and one line per artifact not chosen, and the warnings
    that qualify it."""
    head, *others = result.verdict.lines()
    unmet = result.verdict.unmet(result.require)  # what made deploy exit 1 though an artifact ships
    out: list[Block] = [Heading("Verdict"), *([Note(f"Check failed (exit status 1): {_sentence(unmet)}")]
                                              if unmet else []),
                        Paragraph(_sentence(head.removeprefix("verdict: ")))]
    if others:
        out.append(Bullets(tuple(line.strip() for line in others)))
    return out + [Note(_sentence(warning)) for warning in warnings(result)]


def summary_lines(result: DeployResult, report: Path) -> list[str]:
    """What `deploy` prints after its progress: one line per artifact (parity, task metric, latency with its
    spread and speed-up with its interval), where the report is, the warnings, then the verdict."""
    lines = [f"artifacts timed on {result.bench.machine()} (median ms at batch 1, p10-p90; speed-up over "
             "PyTorch eager with its 95% interval):"]
    base = reference_run(result.bench.results)
    for build, candidate in zip(result.builds, result.parity.candidates, strict=True):
        metrics = candidate.outputs[0].metrics if candidate.outputs else {}
        shown = metrics_text({k: metrics[k] for k in TASK_KEYS if k in metrics}, "PyTorch")
        run = artifact_run(result.bench.results, build.precision)
        timing = (f"{fmt(run.latency.median)} ms ({_spread(run.latency.p10, run.latency.p90)})"
                  + (f", {speedup(base, run).text()}" if base else "") if run else "not timed")
        lines.append(f"  {build.path.name} ({build.precision}, {build.backend}): "
                     f"{'pass' if candidate.passed else 'FAIL'}{'; ' + shown if shown else ''}; {timing}")
    lines.append(f"report: {report} (and report.md, summary.json beside it)")
    return [*lines, *(f"warning: {warning}" for warning in warnings(result)), *result.verdict.lines()]


def short_labels(parity: ParityResult) -> dict[str, str]:
    """Candidate label -> its precision when those are distinct (a deploy's case), else the file name: full
    paths make the pictures' captions and the class table's headers unreadable."""
    precisions = [c.precision for c in parity.candidates]
    distinct = len(set(precisions)) == len(precisions)
    return {c.label: c.precision if distinct else Path(c.label).name for c in parity.candidates}


def _relabelled(damage: ClassDamageResult, names: dict[str, str]) -> ClassDamageResult:
    def short(items: tuple[CandidateDamage, ...]) -> tuple[CandidateDamage, ...]:
        return tuple(replace(d, label=names.get(d.label, d.label)) for d in items)
    return replace(damage, candidates=short(damage.candidates), labels=short(damage.labels))


def picture_blocks(parity: ParityResult, pictures: Path | None) -> list[Block]:
    """Where the candidates differ (report.masks) and which classes suffer (report.classes)."""
    out: list[Block] = []
    if pictures is not None and parity.pictures is not None:
        kind = "masks" if TASKS[parity.pictures.task].labelled else "saliency maps"
        indices = ", ".join(str(p.index) for p in parity.pictures.inputs)
        out += [Heading("Where the candidates differ"),
                Paragraph(f"The {len(parity.pictures.inputs)} input(s) where the candidates disagree most with "
                          f"PyTorch (input {indices} of {parity.input_count}), as {kind}, drawn from the parity "
                          "run's own outputs."),
                Image("where the candidates differ", pictures)]
    damage = _relabelled(parity.class_damage, short_labels(parity)) if parity.class_damage else None
    if damage is not None:
        out += [Heading("Per-class damage"),
                Paragraph(f"IoU of each class against PyTorch's mask, and where the disagreeing pixels lie: within "
                          f"{BOUNDARY_WIDTH} px of the reference's class edges (outline flips, usually benign) or "
                          "inside classes (blobs that change what the mask says). 'edge band share' is the share of "
                          "all pixels in that band: a flip share near it means flips scattered at random.")]
        out += [*damage_blocks(damage, parity.class_names), class_table(damage, parity.class_names)]
    return out


def frontier_blocks(result: DeployResult, plot: Path | None) -> list[Block]:
    """Latency against the task metric (pipeline.frontier), as a table and the plot."""
    found = frontier(result)
    if found is None:
        return []
    rows = [[p.label, p.kind, p.kept, p.metric, p.latency_ms, "estimated" if p.estimated else
             ("measured" if p.latency_ms is not None else "not estimated")] for p in found.points]
    searched = any(p.kind != "artifact" for p in found.points)
    text = (f"Every artifact (scored on the parity inputs) and every plan the accuracy-budget search evaluated "
            f"(scored on its held-out calibration inputs), {found.metric} against latency. A plan's latency is "
            "measured only for the plan that was built; the others are estimated by interpolating between FP32 "
            "and the built artifact in the share of multiply-adds run in low precision." if searched else
            f"Each artifact's {found.metric} on the parity inputs against its latency. With --accuracy-budget, "
            "every plan the budget search evaluates (nodes kept in float) is added here.")
    out: list[Block] = [Heading("Speed/accuracy frontier"), Paragraph(text),
                        table(["plan", "kind", "nodes kept in float", found.metric, "latency ms", "latency"], rows)]
    if any(p.latency_ms is None for p in found.points if p.kind == "plan"):
        shares = ", ".join(f"{k} {100 * v:.2g}%" for k, v in found.built_shares.items())
        out.append(Note(f"Latency not estimated where a plan runs more than {MAX_EXTRAPOLATION:g} times the built "
                        f"plan's share of multiply-adds in low precision (built: {shares or 'unknown'}): a straight "
                        "line through one measured point would be a guess."))
    return out + _image("speed/accuracy frontier", plot)


def kept_blocks(result: DeployResult, plot: Path | None) -> list[Block]:
    """The nodes each precision kept in higher precision, and the INT8 pass's choices."""
    lines = []
    for build in result.builds:
        if build.precision_onnx is None:
            continue
        kept = build.kept
        names = ", ".join(f"{k.get('name')} ({k.get('op_type')}: {k.get('reason', '')})" for k in kept[:12])
        lines.append(f"{build.precision}: {len(kept)} kept" + (f": {names}" if kept else "")
                     + (" …" if len(kept) > 12 else ""))
    # No lowered precision built (FP32 alone): no section, not a heading over nothing
    out: list[Block] = ([Heading("Nodes kept in higher precision"), Bullets(tuple(lines)),
                         *_image("precision map", plot)] if lines else [])
    choices = [line for build in result.builds for line in describe_int8(build.report)]
    return out + ([Heading("INT8 choices"), Bullets(tuple(choices))] if choices else [])


def layer_blocks(layers: LayersResult, plot: Path | None) -> list[Block]:
    if not layers.nodes:
        return [Heading("Per-layer error"), Paragraph(_sentence(layers.note or "no per-layer data"))]
    worst = sorted(layers.nodes, key=lambda n: -n.growth)[:5]
    return [Heading("Per-layer error"),
            Paragraph(f"Worst candidate: {layers.candidate} ({layers.precision}); the nodes whose relative L2 error "
                      "against the FP32 graph grows most over their inputs' (growth: the ratio of the two):"),
            table(["node", "op", "PyTorch module", "rel. error", "growth"],
                  [[n.node, n.op_type, n.module or "-", n.error, n.growth] for n in worst]), *_image("layers", plot)]


def blocks(result: DeployResult, plots: dict[str, Path], pictures: Path | None = None) -> list[Block]:
    """The report: the verdict first, then each section with its own plot (make_plots' names)."""
    parity = result.parity
    return [
        Heading(f"deploykit report: {result.model}", 1),
        *verdict_blocks(result),
        Paragraph(f"Options {_options_text(result.options)}; weights {result.weights or '(builder initialisation)'}; "
                  f"backend {result.backend} ({result.backend_note})."),
        Heading("Accuracy against PyTorch"),
        Paragraph(f"{parity.input_count} inputs: {parity.inputs}. "
                  f"{_sentence(parity.summary({c.label: Path(c.label).name for c in parity.candidates}))}"),
        accuracy_table(parity), *accuracy_plot_blocks(parity, plots.get("accuracy")),
        *picture_blocks(parity, pictures),
        *latency_blocks(result, plots.get("latency")),
        *frontier_blocks(result, plots.get("frontier")),
        *kept_blocks(result, plots.get("precision map")),
        *layer_blocks(result.layers, plots.get("layers")),
        Heading("Steps"), table(["step", "skipped (unchanged)", "seconds"],
                                [[s.name, s.skipped, round(s.seconds, 2)] for s in result.steps]),
    ]


def _options_text(options: Mapping[str, Any]) -> str:
    """The model options as the user gave them ('--set num_classes=1'), not a Python dict ("{'num_classes': 1}")."""
    return " ".join(f"--set {key}={value}" for key, value in options.items()) or "(defaults)"


def write_pictures(parity: ParityResult, out: Path) -> Path | None:
    """pictures.png from what the parity run kept (report.masks), or None when nothing disagrees."""
    if parity.pictures is None or not parity.pictures.inputs:
        return None
    names = short_labels(parity)
    pictures = replace(parity.pictures, labels=tuple(names.get(label, label) for label in parity.pictures.labels))
    return write_png(out / "pictures.png", pictures_png(pictures, class_names=parity.class_names), force=True)


def write_report(result: DeployResult, out: Path) -> dict[str, Path]:
    """Write report.md, report.html, summary.json and the plots into `out`; returns the files."""
    plots = make_plots(result, out)
    pictures = write_pictures(result.parity, out)
    drawn = {*plots.values(), *([pictures] if pictures else [])}
    for name in (*PLOT_FILES.values(), "pictures.png"):  # a previous run's image this report does not show
        if out / name not in drawn:
            (out / name).unlink(missing_ok=True)
    parts = blocks(result, plots, pictures)
    files = {"markdown": write_text(out / "report.md", to_markdown(parts), force=True),
             "html": write_text(out / "report.html", to_html(parts, "deploykit report"), force=True),
             "json": write_json(out / "summary.json", result.to_dict(), force=True)}
    return {**files, **plots, **({"pictures": pictures} if pictures else {})}

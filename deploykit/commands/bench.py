"""`deploykit bench TARGET...` (latency, throughput, roofline efficiency) and `deploykit bench kernels`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from deploykit.bench.harness import BenchResult, speedup
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.kernels import SUITES, VARIANTS, run_kernels
from deploykit.bench.remote import SERVING_HEADERS, LoadConfig, run_remote_bench, serving_rows
from deploykit.bench.run import HEADERS, BenchReport, compare_reports, phase_rows, table_rows, to_csv
from deploykit.bench.runners import BACKEND_CHOICES
from deploykit.commands._inputs import reads
from deploykit.commands._options import (
    at_least,
    echo_json,
    force_option,
    given,
    json_option,
    model_source_options,
    progress,
    seconds,
    threads_option,
)
from deploykit.errors import ConfigConflict, InputError
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import write_json
from deploykit.report.bench_plots import plot_dilated, plot_separable, require_matplotlib
from deploykit.report.format import fmt, text_table
from deploykit.targets.bench import run_bench
from deploykit.targets.resolve import is_file_target
from deploykit.zoo.sources import check_source_size, parse_options, parse_shape

MAX_BATCH = 65536
MAX_CONCURRENCY = 1024  # one client thread each


class _BenchGroup(click.Group):
    """`bench TARGET...` runs `bench run TARGET...`; `bench kernels` is the kernel sweep."""

    default_command = "run"  # also read by the CLI, to name the command a usage error is about

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=_BenchGroup)
def bench() -> None:
    """Benchmark models (`deploykit bench TARGET...`, same as `bench run TARGET...`) or the convolution kernels
    dense-prediction models depend on (`deploykit bench kernels`)."""


def _csv_ints(text: str | None, what: str, most: int) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be integers separated by commas, e.g. 1,2,4,8") from None
    if not values or any(v <= 0 or v > most for v in values):
        raise click.BadParameter(f"{what} must be integers from 1 to {most}, e.g. 1,2,4,8")
    return values


def _csv_words(values: tuple[str, ...], option: str) -> list[str] | None:
    """The names given to a repeatable, comma-separated option; None when it was not given. Given but naming
    nothing (`--backend ,`) is an error, not the default."""
    words = [w.strip() for v in values for w in v.split(",") if w.strip()]
    if values and not words:
        raise click.BadParameter("give at least one name", param_hint=option)
    return words or None


@bench.command("run", short_help="Time zoo models, .onnx files or built artifacts against each other, or a served "
                                 "model.")
@click.argument("targets", nargs=-1, metavar="TARGET...")
@click.option("--url", default=None, metavar="http://HOST:PORT",
              help="Measure a served model instead (any KServe v2 endpoint: deploykit serve, Triton, KServe).")
@click.option("--model", "served_model", default=None, help="With --url: the model's name on the server.")
@click.option("--concurrency", default=None, metavar="1,4,16",
              help=f"With --url: concurrent clients, one level after another (default 1,4,16; 1 to "
                   f"{MAX_CONCURRENCY}).")
@click.option("--image", type=click.Path(dir_okay=False, exists=True), default=None,
              help="With --url: the encoded image sent to a BYTES input (default: a photograph).")
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False, exists=True), default=None,
              metavar="FILE.npz",
              help="With --url: the tensors to send, one array per input named as it (an .npy for one input), "
                   "axis 0 the batch (default: random normal floats, integers in [0, 255]).")
@click.option("--backend", "backends", multiple=True, metavar="NAME[,NAME]",
              help=f"{', '.join(BACKEND_CHOICES)} (default: the target's own; a zoo model given a backend that runs "
                   "ONNX is exported to a temporary ONNX file first).")
@click.option("--batch", "batches", default=None, metavar="1,2,4,8",
              help=f"Batch sizes to time (default 1; 1 to {MAX_BATCH}).")
@click.option("--input-shape", default=None, metavar="N,C,H,W", help="Input shape (default: the model's size).")
@click.option("--warmup", type=seconds(), default=None, help="Warm-up seconds per case, excluded (default 0.2).")
@click.option("--duration", type=seconds(open_=True), default=None,
              help="Seconds per case (default 3, >= 10 rounds); all cases run round-robin in that total.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Time exactly this many rounds instead.")
@threads_option("Intra-op threads (default: the backend's, all cores).")
@click.option("--no-roofline", is_flag=True, help="Skip measuring the machine's peaks (no efficiency column).")
@click.option("--cuda-graph", is_flag=True, help="TensorRT: replay the engine as a CUDA graph (as trtexec 11).")
@model_source_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the full JSON (every sample, environment, peaks) here: a baseline for --compare.")
@click.option("--compare", "baseline", type=click.Path(dir_okay=False, exists=True), default=None,
              help="A JSON from an earlier run: flag changes beyond the measured noise.")
@click.option("--min-change", type=at_least(0), default=None, metavar="PERCENT",
              help="With --compare: smallest change of the median worth flagging (default 2).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV instead of a table.")
@force_option
@json_option
@reads("targets", "weights", "baseline", "image", "inputs_file")
def run(targets: tuple[str, ...], url: str | None, served_model: str | None, concurrency: str | None,
        image: str | None, inputs_file: str | None, backends: tuple[str, ...], batches: str | None,
        input_shape: str | None, warmup: float | None, duration: float | None, iterations: int | None,
        threads: int | None, no_roofline: bool, cuda_graph: bool, set_options: tuple[str, ...], weights: str | None,
        allow_partial: bool, trust_checkpoint: bool, task: str | None, output: str | None, baseline: str | None,
        min_change: float | None, as_csv: bool, force: bool, as_json: bool) -> None:
    """Time each TARGET (a zoo name, package.module:factory, an .onnx file or a built artifact) end to end,
    inputs in and outputs out, over several distinct inputs in rotation. Every (target, backend, batch) case
    runs in one round-robin: one inference of each per round, the order rotating, an untimed pause between
    cases, so other work on the machine slows all alike. Reports min, p10, median, mean, p90, p95, p99, max
    and std (nearest-rank percentiles, as trtexec), throughput, achieved GFLOP/s and the share of this
    machine's measured sgemm peak, with an environment manifest and the machine's load while timing.

    With --url and --model, measure a served model instead, as perf_analyzer does: throughput and latency
    percentiles at each --concurrency level, with the server's batch sizes where it reports them (Triton's
    statistics extension), in the same JSON."""
    if iterations is not None and duration is not None:
        raise ConfigConflict("give --duration or --iterations, not both")
    if as_csv and as_json:
        raise ConfigConflict("give --csv or --json, not both: each takes stdout whole")
    _check_source(targets, url, served_model, concurrency, image, inputs_file)
    if url is not None:
        _refuse_local_options({"--backend": bool(backends), "--batch": batches is not None, "--threads": threads,
                               "--no-roofline": no_roofline, "--cuda-graph": cuda_graph, "--set": set_options,
                               "--weights": weights, "--allow-partial": allow_partial,
                               "--trust-checkpoint": trust_checkpoint, "--task": task})
    if output is not None:
        check_output_path(output, force=force)
    previous = _read_baseline(baseline) if baseline else None  # a bad baseline fails now, not after timing
    if url is not None:
        report = _served(url, str(served_model), concurrency, image, inputs_file, input_shape, warmup, duration,
                         iterations)
    else:
        report = _in_process(targets, backends, batches, input_shape, warmup, duration, iterations, threads,
                             no_roofline, cuda_graph, set_options, weights, allow_partial, trust_checkpoint, task)
    comparison = None
    if previous is not None:
        comparison = compare_reports(previous, report, **({} if min_change is None else
                                                          {"min_change": min_change / 100}))
    if output is not None:
        write_json(output, report.to_dict(), force=force)
    if as_json:
        echo_json({**report.to_dict(), **({"comparison": comparison.to_dict()} if comparison else {})})
    elif as_csv:
        click.echo(to_csv(report), nl=False)
        if comparison is not None:
            click.echo(_comparison_table(comparison), err=True)
    else:
        _render(report, comparison)
    if output is not None:
        progress(f"wrote {output}")
    if previous is not None and comparison is not None and not comparison.comparisons:  # the run stands: shown, written
        raise InputError(f"nothing in --compare {baseline} matches this run (it holds "
                         f"{_described(previous.results)}; this run timed {_described(report.results)}): "
                         "compare runs of the same model, batch and input shape")


def _described(results: Sequence[BenchResult]) -> str:
    shown = [f"{r.target} {r.backend} {r.precision} batch {r.batch} at {'x'.join(map(str, r.input_shape))}"
             for r in results[:3]]
    return ", ".join(shown) + (f" and {len(results) - 3} more" if len(results) > 3 else "") if shown else "no results"


def _check_source(targets: tuple[str, ...], url: str | None, served_model: str | None, concurrency: str | None,
                  image: str | None, inputs_file: str | None) -> None:
    if url is None:
        if not targets:
            raise click.UsageError("give a TARGET to time, or --url URL --model NAME for a served model")
        if served_model or concurrency or image or inputs_file:
            raise ConfigConflict("--model, --concurrency, --image and --inputs measure a served model: add --url URL")
    elif targets:
        raise ConfigConflict(f"give TARGET ({' '.join(targets)}) or --url, not both")
    elif not served_model:
        raise click.UsageError("--url needs --model NAME (the model's name on the server)")


def _refuse_local_options(given_options: dict[str, object]) -> None:
    """Options that shape a model timed in this process mean nothing to a served one: refused, not ignored."""
    named = [name for name, value in given_options.items() if value not in (None, False, ())]
    if named:
        batch = " (a batch per request: --input-shape N,C,H,W)" if "--batch" in named else ""
        raise ConfigConflict(f"{', '.join(named)}: only for a model timed in this process, not with --url (the "
                             f"server runs the model as served); drop {'them' if len(named) > 1 else 'it'}{batch}")


def _in_process(targets: tuple[str, ...], backends: tuple[str, ...], batches: str | None, input_shape: str | None,
                warmup: float | None, duration: float | None, iterations: int | None, threads: int | None,
                no_roofline: bool, cuda_graph: bool, set_options: tuple[str, ...], weights: str | None,
                allow_partial: bool, trust_checkpoint: bool, task: str | None) -> Any:
    config = TimingConfig(**given(warmup_s=warmup, duration_s=duration, iterations=iterations))
    options: dict[str, Any] = {"options": parse_options(set_options), "weights": weights,
                               "allow_partial": allow_partial, "trust_checkpoint": trust_checkpoint, "task": task}
    shape = parse_shape(input_shape) if input_shape else None
    for target in targets:
        if not is_file_target(target):
            check_source_size(target, shape, options["options"], weights)
    return run_bench(list(targets), backends=_csv_words(backends, "--backend"),
                     **given(batches=_csv_ints(batches, "--batch", MAX_BATCH)),
                     input_shape=shape, config=config,
                     threads=threads, model_options=options, roofline=not no_roofline, cuda_graph=cuda_graph,
                     progress=progress)


def _served(url: str, model: str, concurrency: str | None, image: str | None, inputs_file: str | None,
            input_shape: str | None, warmup: float | None, duration: float | None, iterations: int | None) -> Any:
    if iterations is not None:
        raise ConfigConflict("--iterations times one request after another; a served model runs for --duration")
    levels = _csv_ints(concurrency, "--concurrency", MAX_CONCURRENCY)
    config = LoadConfig(**given(concurrency=tuple(levels) if levels else None, warmup_s=warmup, duration_s=duration))
    return run_remote_bench(url, model, config=config, input_shape=parse_shape(input_shape) if input_shape else None,
                            image=Path(image) if image else None,
                            inputs_file=Path(inputs_file) if inputs_file else None, progress=progress)


def _read_baseline(path: str) -> Any:
    """The BenchReport of an earlier `bench -o` run, or a one-line error saying why the file is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"--compare {path} is not a JSON file ({exc}); give the -o file of an earlier "
                         "`deploykit bench` run") from None
    try:
        return BenchReport.from_dict(data)
    except InputError as exc:
        raise InputError(f"--compare {path} is not a deploykit bench JSON: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"--compare {path} is JSON but not a `deploykit bench -o` report (missing or wrong "
                         f"{exc}); give the -o file of an earlier bench run") from None


def _render(report: Any, comparison: Any) -> None:
    served = [r for r in report.results if r.concurrency is not None]
    if served:
        click.echo(f"{served[0].target}, input {'x'.join(map(str, served[0].input_shape))}, {served[0].mode}:")
        click.echo(text_table(SERVING_HEADERS, serving_rows(report)))
    else:
        click.echo(text_table(HEADERS, table_rows(report)))
    phases = phase_rows(report)
    if phases:
        click.echo("\nGPU phases (median ms; latency above is end-to-end, compute is compute-only):")
        click.echo(text_table(["target", "backend", "batch", "H2D", "compute", "D2H", "enqueue (host)"], phases))
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.backend}: {skipped.reason}")
    env = report.environment
    peaks = report.peaks
    where = "client" if served else "timed on"  # a served model runs on the server; this is the client's CPU
    click.echo(f"\n{where} {report.machine()}; "
               + (f"peaks: sgemm {fmt(peaks['gemm_gflops'])} GFLOP/s, copy {fmt(peaks['copy_gbps'])} GB/s; "
                  if peaks else "")
               + f"torch {env['versions'].get('torch')}, onnxruntime {env['versions'].get('onnxruntime')}")
    if report.results and not served:
        click.echo(f"mode: {report.results[0].mode}")
    if len(report.results) > 1 and not served:
        first = report.results[0]
        click.echo(f"\nround-robin in one run; speed-up over {first.target} {first.backend} {first.precision} batch "
                   f"{first.batch} (ratio of medians per image, 95% bootstrap interval; an interval containing 1 "
                   "is a tie):")
        for result in report.results[1:]:
            click.echo(f"  {result.target} {result.backend} {result.precision} batch {result.batch}: "
                       f"{speedup(first, result).text()}")
    if report.load is not None:
        click.echo(f"machine load while timing: {report.load.describe()}")
    for note in report.notes:
        click.echo(f"note: {note}")
    if comparison is not None:
        click.echo("\n" + _comparison_table(comparison))


def _band(change: Any) -> str:
    if change.low is None or change.high is None:
        return "none (1 sample)"
    return f"[{change.low:+.3f}, {change.high:+.3f}]"


def _comparison_table(comparison: Any) -> str:
    rows = [[c.target, c.backend, c.precision, c.batch, c.change.baseline_median, c.change.current_median,
             f"{100 * c.change.relative:+.1f}%", _band(c.change), c.change.verdict]
            for c in comparison.comparisons]
    lines = [text_table(["target", "backend", "precision", "batch", "baseline ms", "now ms", "change",
                         "noise band ms", "verdict"], rows)]
    lines += [f"environment differs: {line}" for line in comparison.environment_differences]
    lines += [f"not in the baseline: {line}" for line in comparison.unmatched]
    return "\n".join(lines)


@bench.command("kernels", short_help="Dilated and depthwise-separable convolutions vs the machine's roofline.")
@click.option("--quick", is_flag=True, help="A short sweep (under a minute on 2 cores): fewer shapes and rates.")
@click.option("--suite", "suites", multiple=True, type=click.Choice(SUITES),
              help="Which sweep (default both).")
@click.option("--backend", "backends", multiple=True, metavar="NAME[,NAME]",
              help=f"{', '.join(dict.fromkeys(b for b, _ in VARIANTS))} (default: all that are available).")
@click.option("--precision", "precisions", multiple=True, metavar="P[,P]",
              help=f"{', '.join(dict.fromkeys(p for _, p in VARIANTS))} (default all).")
@threads_option("Intra-op threads (default: all cores).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the JSON here, with the PNG plots beside it (NAME.dilated.png, NAME.separable.png).")
@click.option("--no-plots", is_flag=True, help="Do not draw the PNG plots.")
@force_option
@json_option
def kernels(quick: bool, suites: tuple[str, ...], backends: tuple[str, ...], precisions: tuple[str, ...],
            threads: int | None, output: str | None, no_plots: bool, force: bool, as_json: bool) -> None:
    """Time 3x3 dilated convolutions (rates 1-36 on DeepLab's shapes) and depthwise-separable pairs against
    the standard 3x3 they replace (MobileNetV2, Xception-65 shapes) in PyTorch eager, ONNX Runtime fp32/
    fp16/int8 and TensorRT when present; GFLOP/s, GB/s and efficiency against the measured roofline."""
    paths = _kernel_paths(output, not no_plots)
    for path in paths:
        check_output_path(path, force=force)
    if len(paths) > 1:
        require_matplotlib()  # fail before a long sweep, not after it
    report = run_kernels(quick=quick, **given(suites=list(suites) or None),
                         backends=_csv_words(backends, "--backend"),
                         precisions=_csv_words(precisions, "--precision"), threads=threads,
                         progress=progress)
    written = []
    if output is not None:
        written.append(write_json(output, report.to_dict(), force=force))
        if not no_plots:
            machine = report.machine()
            written += [p for p in (plot_dilated(report.results, paths[1], force=force, machine=machine),
                                    plot_separable(report.results, paths[2], force=force, machine=machine))
                        if p is not None]
    if as_json:
        echo_json(report.to_dict())
    else:
        _render_kernels(report)
    for written_path in written:
        progress(f"wrote {written_path}")


def _kernel_paths(output: str | None, plots: bool) -> list[str]:
    if output is None:
        return []
    stem = output[:-5] if output.endswith(".json") else output
    return [output, *([f"{stem}.dilated.png", f"{stem}.separable.png"] if plots else [])]


def _render_kernels(report: Any) -> None:
    rows = [[r.shape, r.variant, r.dilation, r.backend, r.precision, r.median_ms, r.gflops, r.gbps,
             r.roofline_gflops, r.efficiency_percent] for r in report.results]
    click.echo(text_table(["shape", "variant", "rate", "backend", "precision", "median ms", "GFLOP/s", "GB/s",
                           "roofline GFLOP/s", "% of roofline"], rows))
    for skipped in report.skipped:
        click.echo(f"skipped {skipped.backend}: {skipped.reason}")
    peaks = report.peaks
    click.echo(f"\ntimed on {report.machine()}; peaks: sgemm {peaks['gemm_gflops']:.1f} GFLOP/s, copy "
               f"{peaks['copy_gbps']:.1f} GB/s, {peaks['threads']} threads; {report.seconds:.0f} s")
    if report.gpu_peaks:
        gpu = report.gpu_peaks
        click.echo(f"GPU peaks ({gpu['device']}): sgemm {gpu['gemm_gflops']:.0f} GFLOP/s, copy "
                   f"{gpu['copy_gbps']:.0f} GB/s; TensorRT times are GPU compute (CUDA events), transfers excluded")
    for note in report.notes:
        click.echo(f"note: {note}")

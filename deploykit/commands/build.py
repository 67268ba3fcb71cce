"""`deploykit build-engine`: an ONNX model to an artifact of any precision and backend in the tables; each
backend's own options come from its entry (its option group), the precision flags and keep options from PRECISIONS."""

from __future__ import annotations

from typing import Any

import click

from deploykit.backends.base import BACKENDS, COMPILERS
from deploykit.build import build_artifact
from deploykit.calib.cache import check_cache_path
from deploykit.calib.methods import CHOICES
from deploykit.calib.qdq import LAYOUTS
from deploykit.commands._inputs import reads
from deploykit.commands._options import (
    at_least,
    backend_option_groups,
    backend_options,
    echo_json,
    force_option,
    json_option,
    progress,
    threads_option,
)
from deploykit.io.output_checks import check_output_path
from deploykit.metrics.table import METRICS
from deploykit.precision.int8_choices import INT8_FLOAT
from deploykit.precision.int8_choices import describe as describe_int8
from deploykit.precision.passes import SENSITIVITIES, CalibrationOptions
from deploykit.precision.recovery import EQUALIZE, recovery_options
from deploykit.precision.table import DEFAULT, PRECISIONS, check_flags_apply, precision_of
from deploykit.report.format import fmt, text_table
from deploykit.targets.race import choose_backend


def precision_flags(func: Any) -> Any:
    """--fp32 / --fp16 / --int8, one per PRECISIONS entry, and each one's keep option (--keep-fp32, ...)."""
    for entry in reversed(PRECISIONS.values()):
        if entry.keep_option:
            func = click.option(f"--{entry.keep_option.replace('_', '-')}", entry.keep_option, multiple=True,
                                metavar="NODE_OR_OPTYPE", help=entry.keep_help)(func)
    for entry in reversed(PRECISIONS.values()):
        func = click.option(entry.flag, "precision", flag_value=entry.name,
                            help=entry.help.rstrip(".") + (" (the default)." if entry is DEFAULT else "."))(func)
    return func


def backend_option(func: Any) -> Any:
    ranked = sorted((b for b in BACKENDS.values() if b.auto_rank), key=lambda b: -b.auto_rank)
    default = ", else ".join(f"{b.title}{f' where it {b.ready_note}' if b.ready_note != 'found ready' else ''}"
                             for b in ranked)
    return click.option("--backend", type=click.Choice(["auto", *COMPILERS]), default=None,
                        help=f"Default: the best backend ready here ({default}). auto on a CPU: build every ready "
                             "CPU backend's artifact and keep the fastest, measured on the model.")(func)


def _defaults(field: str) -> str:
    """Each value of a Backend default (`qdq_layout`, `calib_method`) and the backends whose default it is."""
    owners: dict[str, list[str]] = {}
    for entry in BACKENDS.values():
        if not entry.reference:
            owners.setdefault(getattr(entry, field), []).append(entry.title)
    return ", ".join(f"{value} for {' and '.join(titles)}" for value, titles in owners.items())


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The artifact to write (its sidecar OUT.deploykit.json goes beside it).")
@precision_flags
@backend_option
@click.option("--fp16-io", is_flag=True, help="FP16: float16 graph inputs and outputs too (default float32).")
@click.option("--calib-data", default=None, metavar="DIR|FILE|photos|synthetic",
              help="Calibration inputs: images (model's preprocessing), .npy/.npz, scikit-image photos, or noise.")
@click.option("--calib-n", type=click.IntRange(min=1), default=None, help="Calibration inputs to use (default 64).")
@click.option("--calib-method", type=click.Choice(CHOICES), default=None,
              help=f"INT8 range method; auto scores each candidate's INT8 graph and keeps the best (default: "
                   f"{_defaults('calib_method')}; see deploykit.calib.methods).")
@click.option("--percentile", type=at_least(0, open_=True, high=100), default=None,
              help="Percentile of |x| for --calib-method percentile (default 99.99).")
@click.option("--calib-cache", type=click.Path(dir_okay=False), default=None,
              help="Calibration cache file (default: keyed file in ~/.cache/deploykit/calibration).")
@click.option("--no-calib-cache", is_flag=True, help="Neither read nor write a calibration cache.")
@click.option("--accuracy-budget", multiple=True, metavar="METRIC>=VALUE",
              help="FP16/INT8: keep the fewest nodes in higher precision so that e.g. pixel_agreement>=0.995 "
                   f"(metrics: {', '.join(m.name for m in METRICS.values() if m.budget)}) holds on held-out data; "
                   "repeat for several.")
@click.option("--holdout", type=click.IntRange(min=1), default=None,
              help="Calibration inputs held out to measure the budget (default a quarter, 1 to 8).")
@click.option("--labels", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Ground-truth PNG masks named like the --calib-data images: lets a budget be "
                   "'miou_drop<=0.5' (mIoU points lost against the labels on the held-out images).")
@click.option("--max-float", "max_kept", type=click.IntRange(min=0), default=None,
              help="Most weighted nodes the budget search may keep in float (default: all; 0: none).")
@click.option("--sensitivity", type=click.Choice(SENSITIVITIES), default=None,
              help="Budget search ranking: single (default: one node at a time) or local (two runs, coarser).")
@click.option("--qdq-layout", type=click.Choice(LAYOUTS), default=None,
              help=f"INT8 Q/DQ placement (default: {_defaults('qdq_layout')}).")
@click.option("--int8-float", "int8_float", type=click.Choice(INT8_FLOAT), default=None,
              help="INT8: precision of the ops left unquantized (default: fp16 for TensorRT, auto with an "
                   "--accuracy-budget; fp32 on CPUs; see deploykit.precision.int8_choices).")
@click.option("--int8-grouped", "int8_grouped", type=click.Choice(["int8", "float"]), default=None,
              help="INT8: depthwise/grouped convolutions quantized or left float (default: float for TensorRT, "
                   "which runs them faster in FP16; int8 on CPUs).")
@click.option("--int8-rounding", type=click.Choice(["nearest", "adaround", "adaround-asymmetric"]), default=None,
              help="INT8 weight rounding: nearest (default), adaround (per-layer learned rounding on the "
                   "calibration data; slower to build) or adaround-asymmetric (each layer against its inputs "
                   "from the graph with the layers before it INT8; slower still; see deploykit.calib.adaround).")
@click.option("--int8-bias-correction/--no-int8-bias-correction", default=None,
              help="INT8: restore each quantized layer's mean output per channel (default: on).")
@click.option("--int8-equalize", type=click.Choice(list(EQUALIZE)), default=None,
              help="INT8 cross-layer equalization of Conv-ReLU-Conv (relu) and/or Conv-ReLU6-Conv (relu6) "
                   "pairs (default: see deploykit.precision.recovery).")
@click.option("--int8-distill", "int8_distill", type=click.IntRange(min=0), default=None, metavar="STEPS",
              help="INT8: train the quantized layers' weights and biases against the float model for STEPS steps "
                   "on the calibration data, as the backend computes the graph (default: 0, off; 96 steps took "
                   "2.5-3.5 min for DeepLabv3+ at 513x513 on 2 busy cores; see deploykit.calib.distill).")
@threads_option("ONNX Runtime threads for calibration and checks (default: all cores).")
@backend_option_groups
@force_option
@json_option
@reads("model", "calib_data", "labels")
def build_engine(model: str, output: str, precision: str | None, backend: str | None, fp16_io: bool,
                 calib_data: str | None, calib_n: int | None, calib_method: str | None, percentile: float | None,
                 calib_cache: str | None, no_calib_cache: bool, accuracy_budget: tuple[str, ...],
                 holdout: int | None, labels: str | None, max_kept: int | None, sensitivity: str | None,
                 qdq_layout: str | None, int8_float: str | None, int8_grouped: str | None,
                 int8_rounding: str | None, int8_bias_correction: bool | None, int8_equalize: str | None,
                 int8_distill: int | None, threads: int | None, force: bool, as_json: bool,
                 **grouped: Any) -> None:
    """Build MODEL.onnx into OUT at the chosen precision. FP16 and INT8 are graph transforms written beside
    OUT (<OUT stem>.fp16.onnx / .int8.onnx, what TensorRT compiles); the backend then compiles that graph.
    Every later command (parity, bench) loads OUT through its sidecar."""
    given = {"--calib-data": calib_data, "--calib-n": calib_n, "--calib-cache": calib_cache,
             "--no-calib-cache": no_calib_cache or None, "--calib-method": calib_method, "--percentile": percentile,
             "--qdq-layout": qdq_layout, "--int8-float": int8_float, "--int8-grouped": int8_grouped,
             "--int8-rounding": int8_rounding, "--int8-bias-correction": int8_bias_correction,
             "--int8-equalize": int8_equalize, "--int8-distill": int8_distill, "--holdout": holdout, "--labels": labels,
             "--max-float": max_kept,
             "--sensitivity": sensitivity}
    check_flags_apply(precision_of(precision), [flag for flag, value in given.items() if value is not None],
                      budget=bool(accuracy_budget))
    keeps = {p.keep_option: grouped.pop(p.keep_option) for p in PRECISIONS.values() if p.keep_option}
    options = backend_options(grouped)  # what is left: the backends' option groups
    for cache in (calib_cache, *options.files):  # read if present, written after the work: check now
        if cache:
            check_output_path(cache, force=True)
    if calib_cache:
        check_cache_path(calib_cache)

    calibration = CalibrationOptions(data=calib_data, n=calib_n, method=calib_method, percentile=percentile,
                                     cache=calib_cache, use_cache=not no_calib_cache, holdout=holdout,
                                     max_kept=max_kept, sensitivity=sensitivity, int8_float=int8_float,
                                     labels=labels, grouped=int8_grouped,
                                     recovery=recovery_options(rounding=int8_rounding, equalize=int8_equalize,
                                                               bias_correction=int8_bias_correction,
                                                               distill_steps=int8_distill))
    chosen, note, racer = choose_backend(backend, layout_given=qdq_layout is not None)
    result = build_artifact(model, output, precision=precision_of(precision), backend=chosen, backend_note=note,
                            calibration=calibration, keeps=keeps, fp16_io=fp16_io, accuracy_budget=accuracy_budget,
                            qdq_layout=qdq_layout, threads=threads, force=force,
                            options=options.typed_for(chosen), progress=progress, racer=racer)
    if as_json:
        echo_json({**result.to_dict(), "precision_audit": result.sidecar.build_options.get("precision_audit")})
        return
    click.echo(f"backend: {result.backend_note}")
    rows: list[list[object]] = [[n["name"], n["op_type"], n["reason"]] for n in result.kept]
    if rows:
        click.echo(text_table(["kept in higher precision", "op", "why"], rows))
    budget = result.report.get("budget")
    if budget:
        def shown(values: dict[str, float]) -> str:
            return ", ".join(f"{k} {fmt(v)}" for k, v in values.items())  # as the tables show them

        click.echo(f"accuracy budget {budget['budget']}: reached {shown(budget['reached'])} with "
                   f"{len(budget['kept'])} of {budget['candidates']} candidate nodes kept in higher precision "
                   f"(none kept: {shown(budget['unrestricted'])}; {budget['evaluations']} evaluations)")
    for line in describe_int8(result.report):
        click.echo(f"INT8: {line}")
    for note in result.notes:
        click.echo(note)
    if result.precision_onnx:
        click.echo(f"wrote {result.precision_onnx} ({result.precision} graph)")
    click.echo(f"wrote {result.path} and {result.sidecar_path.name} ({result.precision}, {result.backend}, "
               f"{result.seconds:.1f} s)")

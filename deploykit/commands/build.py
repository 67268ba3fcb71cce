"""`deploykit build-engine`: an ONNX model to an FP32/FP16/INT8 artifact for ONNX Runtime or TensorRT."""

from __future__ import annotations

from typing import Any

import click

from deploykit.backends.base import COMPILERS
from deploykit.backends.tensorrt.audit import PrecisionAudit
from deploykit.backends.tensorrt.build import TensorRTBuildOptions
from deploykit.build import build_artifact
from deploykit.commands._inputs import reads
from deploykit.commands._options import at_least, echo_json, force_option, json_option, progress
from deploykit.io.outputs import check_output_path
from deploykit.precision.passes import CalibrationOptions
from deploykit.precision.table import DEFAULT, PRECISIONS
from deploykit.report.format import text_table
from deploykit.targets.race import racer_for


def tensorrt_options(func: Any) -> Any:
    """--backend tensorrt options; each is passed on only when given (ONNX Runtime builds reject them)."""
    for option in reversed([
        click.option("--min-shape", "min_shape", multiple=True, metavar="NAME:NxCxHxW",
                     help="TensorRT profile: smallest input shape (default 1 x C x H/2 x W/2 of the model's size)."),
        click.option("--opt-shape", "opt_shape", multiple=True, metavar="NAME:NxCxHxW",
                     help="TensorRT profile: the shape to tune for (default 1 x C x H x W)."),
        click.option("--max-shape", "max_shape", multiple=True, metavar="NAME:NxCxHxW",
                     help="TensorRT profile: largest input shape (default 4 x C x 2H x 2W)."),
        click.option("--workspace", "workspace_mib", type=click.IntRange(min=1), default=None, metavar="MIB",
                     help="TensorRT workspace limit in MiB (default: TensorRT's, the GPU's memory)."),
        click.option("--builder-optimization-level", "optimization_level", type=click.IntRange(0, 5), default=None,
                     help="TensorRT builder optimization level 0-5 (default 3; higher builds longer)."),
        click.option("--timing-cache", "timing_cache", type=click.Path(dir_okay=False), default=None,
                     help="TensorRT timing cache file: read if present, updated after the build."),
        click.option("--version-compatible", "version_compatible", is_flag=True,
                     help="TensorRT: an engine later TensorRT versions can load (may be slower)."),
        click.option("--hardware-compatibility", "hardware_compatibility", type=click.Choice(["none", "ampere+"]),
                     default=None, help="TensorRT: ampere+ runs on every GPU of compute capability 8.0+ "
                                        "(may be slower; default none: this GPU's compute capability)."),
        click.option("--require-precision", "require_precision", type=at_least(0, open_=True, high=1),
                     default=None, metavar="SHARE",
                     help="TensorRT: fail unless this share (e.g. 0.9) of the engine's FLOPs runs in the requested "
                          "precision, per the engine inspector's precision audit."),
    ]):
        func = option(func)
    return func


def typed_tensorrt_options(trt: dict[str, Any]) -> object | None:
    """The TensorRT options given on the command line as TensorRTBuildOptions (None when none was given, so
    that an ONNX Runtime build rejects any of them)."""
    given = {k: v for k, v in trt.items() if v not in (None, (), False)}
    if not given:
        return None

    return TensorRTBuildOptions.from_cli(**given)


def precision_flags(func: Any) -> Any:
    """--fp32 / --fp16 / --int8, one per PRECISIONS entry."""
    for entry in reversed(PRECISIONS.values()):
        func = click.option(entry.flag, "precision", flag_value=entry.name,
                            help=entry.help.rstrip(".") + (" (the default)." if entry.name == DEFAULT else "."))(func)
    return func


def backend_option(func: Any) -> Any:
    return click.option("--backend", type=click.Choice(["auto", *COMPILERS]), default=None,
                        help="Default: the best backend ready here (TensorRT where a builder can be "
                             "constructed), else ONNX Runtime. auto on a CPU (build-engine): build every ready "
                             "CPU backend's artifact and keep the fastest, measured on the model.")(func)


@click.command("build-engine")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The artifact to write (its sidecar OUT.deploykit.json goes beside it).")
@precision_flags
@backend_option
@click.option("--fp16-io", is_flag=True, help="FP16: float16 graph inputs and outputs too (default float32).")
@click.option("--keep-fp32", multiple=True, metavar="NODE_OR_OPTYPE",
              help="FP16: keep this node name or op type in float32 (repeatable; DepthwiseConv works too).")
@click.option("--keep-float", multiple=True, metavar="NODE_OR_OPTYPE",
              help="INT8: keep this node name or op type unquantized (repeatable; DepthwiseConv works too).")
@click.option("--calib-data", default=None, metavar="DIR|FILE|photos|synthetic",
              help="Calibration inputs: images (model's preprocessing), .npy/.npz, scikit-image photos, or noise.")
@click.option("--calib-n", type=click.IntRange(min=1), default=None, help="Calibration inputs to use (default 64).")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default=None,
              help="INT8 range method (default minmax, as NVIDIA ModelOpt; see deploykit.calib.methods).")
@click.option("--percentile", type=at_least(0, open_=True, high=100), default=None,
              help="Percentile of |x| for --calib-method percentile (default 99.99).")
@click.option("--calib-cache", type=click.Path(dir_okay=False), default=None,
              help="Calibration cache file (default: keyed file in ~/.cache/deploykit/calibration).")
@click.option("--no-calib-cache", is_flag=True, help="Neither read nor write a calibration cache.")
@click.option("--accuracy-budget", multiple=True, metavar="METRIC>=VALUE",
              help="FP16/INT8: keep the fewest nodes in higher precision so that e.g. pixel_agreement>=0.995 "
                   "(or miou, cc, sim, kld<=, cosine) holds on held-out data; repeat for several.")
@click.option("--holdout", type=click.IntRange(min=1), default=None,
              help="Calibration inputs held out to measure the budget (default a quarter, 1 to 8).")
@click.option("--labels", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Ground-truth PNG masks named like the --calib-data images: lets a budget be "
                   "'miou_drop<=0.5' (mIoU points lost against the labels on the held-out images).")
@click.option("--max-float", "max_kept", type=click.IntRange(min=0), default=None,
              help="Most weighted nodes the budget search may keep in float (default: all; 0: none).")
@click.option("--sensitivity", type=click.Choice(["local", "single"]), default=None,
              help="Budget search ranking: single (default: one node at a time) or local (two runs, coarser).")
@click.option("--qdq-layout", type=click.Choice(["inputs", "inputs+outputs"]), default=None,
              help="INT8 Q/DQ placement (default: inputs for TensorRT, inputs+outputs for ONNX Runtime).")
@click.option("--int8-float", "int8_float", type=click.Choice(["fp32", "fp16", "auto"]), default=None,
              help="INT8: precision of the ops left unquantized (default fp32; auto: fp16 where the "
                   "--accuracy-budget holds; see deploykit.precision.passes.INT8_FLOAT).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime threads for calibration and checks (default: all cores).")
@tensorrt_options
@force_option
@json_option
@reads("model", "calib_data", "labels")
def build_engine(model: str, output: str, precision: str | None, backend: str | None, fp16_io: bool,
                 keep_fp32: tuple[str, ...], keep_float: tuple[str, ...], calib_data: str | None,
                 calib_n: int | None, calib_method: str | None, percentile: float | None, calib_cache: str | None,
                 no_calib_cache: bool, accuracy_budget: tuple[str, ...], holdout: int | None, labels: str | None,
                 max_kept: int | None, sensitivity: str | None, qdq_layout: str | None, int8_float: str | None,
                 threads: int | None, force: bool, as_json: bool, **trt: Any) -> None:
    """Build MODEL.onnx into OUT at the chosen precision. FP16 and INT8 are graph transforms written beside
    OUT (<OUT stem>.fp16.onnx / .int8.onnx, what TensorRT compiles); the backend then compiles that graph.
    Every later command (parity, bench) loads OUT through its sidecar."""
    for cache in (calib_cache, trt.get("timing_cache")):  # read if present, written after the work: check now
        if cache:
            check_output_path(cache, force=True)

    calibration = CalibrationOptions(data=calib_data, n=calib_n, method=calib_method, percentile=percentile,
                                     cache=calib_cache, use_cache=not no_calib_cache, holdout=holdout,
                                     max_kept=max_kept, sensitivity=sensitivity, int8_float=int8_float,
                                     labels=labels)
    result = build_artifact(model, output, precision=precision, backend=backend,
                            calibration=calibration, keep_fp32=keep_fp32, keep_float=keep_float, fp16_io=fp16_io,
                            accuracy_budget=accuracy_budget, qdq_layout=qdq_layout, threads=threads, force=force,
                            options=typed_tensorrt_options(trt), progress=progress,
                            racer=racer_for(backend, layout_given=qdq_layout is not None))
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
            return ", ".join(f"{k} {v:.6g}" for k, v in values.items())

        click.echo(f"accuracy budget {budget['budget']}: reached {shown(budget['reached'])} with "
                   f"{len(budget['kept'])} of {budget['candidates']} candidate nodes kept in higher precision "
                   f"(none kept: {shown(budget['unrestricted'])}; {budget['evaluations']} evaluations)")
    audit = result.sidecar.build_options.get("precision_audit")
    if audit:

        click.echo(PrecisionAudit.from_dict(audit).describe())
    if result.precision_onnx:
        click.echo(f"wrote {result.precision_onnx} ({result.precision} graph)")
    click.echo(f"wrote {result.path} and {result.sidecar_path.name} ({result.precision}, {result.backend}, "
               f"{result.seconds:.1f} s)")

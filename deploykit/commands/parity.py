"""`deploykit parity`: is the deployed model as good as the PyTorch one, and if not, which layer broke it?"""

from __future__ import annotations

import click

from deploykit.commands._inputs import reads
from deploykit.commands._options import (
    at_least,
    echo_json,
    force_option,
    given,
    json_option,
    model_source_options,
    progress,
    threads_option,
)
from deploykit.errors import CHECK_FAILED, DONE, CheckFailed, ConfigConflict
from deploykit.evaluate import PROVIDER_ALIASES
from deploykit.io.output_checks import check_output_path
from deploykit.io.outputs import write_text
from deploykit.metrics.table import METRICS
from deploykit.parity.compare import ParitySettings, run_parity
from deploykit.parity.gates import parse_gate
from deploykit.parity.inputs import resolve_inputs
from deploykit.parity.memory import check_run_fits
from deploykit.precision.table import PRECISIONS
from deploykit.report.parity import markdown_report, text_report
from deploykit.targets.resolve import is_file_target, open_target
from deploykit.zoo.sources import check_source_size, parse_options, parse_shape


@click.command()
@click.argument("reference")
@click.argument("candidates", nargs=-1, required=True)
@model_source_options
@click.option("--inputs", "inputs", default=None, metavar="DIR|FILE.npz",
              help="Images (preprocessed as the model expects) or an .npz of N,C,H,W arrays. "
                   "Default: scikit-image's sample photographs.")
@click.option("--random", "random_count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Add N random normal inputs.")
@click.option("--input-shape", default=None, metavar="N,C,H,W", help="Input shape (default: the model's).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use at most this many images or .npz inputs.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of --random (default 0).")
@click.option("--providers", default=None, metavar="|".join(PROVIDER_ALIASES),
              help="ONNX Runtime execution providers, comma-separated (default cpu).")
@threads_option("Threads per runner.")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default=None,
              help="Judge candidates with this precision's gates (default: each candidate's own).")
@click.option("--gate", "gates", multiple=True, metavar="[OUTPUT:]METRIC>=X",
              help="Replace a default gate, e.g. 'pixel_agreement>=0.99' or 'out:cosine>=0.9' (repeatable).")
@click.option("--atol", type=at_least(0), default=None, help="Absolute tolerance of the beyond_tol share (1e-4).")
@click.option("--rtol", type=at_least(0), default=None, help="Relative tolerance of the beyond_tol share (1e-3).")
@click.option("--localize", is_flag=True, help="For failing ONNX candidates, find the first diverging node.")
@click.option("--reference-onnx", type=click.Path(dir_okay=False, exists=True), default=None,
              help="FP32 ONNX reference for --localize (default: the reference, exported if it is PyTorch).")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Nodes listed by --localize (5).")
@click.option("--localize-tol", type=at_least(0, open_=True), default=None,
              help="Relative-error tolerance of --localize (default per precision: "
                   f"{', '.join(f'{p.name} {p.localize_tolerance:g}' for p in PRECISIONS.values())}).")
@click.option("--labels", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Ground-truth masks (PNG class indices, DIR/<image name>.png) for the --inputs images: adds "
                   "miou_gt per side and miou_drop in points from the reference, e.g. --gate 'miou_drop<=0.5'.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Also write a Markdown report.")
@force_option
@json_option
@reads("reference", "candidates", "weights", "inputs", "labels", "reference_onnx")
def parity(reference: str, candidates: tuple[str, ...], set_options: tuple[str, ...], weights: str | None,
           allow_partial: bool, trust_checkpoint: bool, task: str | None, inputs: str | None,
           random_count: int | None,
           input_shape: str | None, limit: int | None, seed: int | None, providers: str | None,
           threads: int | None, precision: str | None, gates: tuple[str, ...], atol: float | None,
           rtol: float | None, localize: bool, reference_onnx: str | None, top_k: int | None,
           localize_tol: float | None, labels: str | None, report: str | None, force: bool,
           as_json: bool) -> None:
    """Run REFERENCE and each CANDIDATE on the same inputs and compare every output: numeric metrics, task
    metrics (segmentation: pixel agreement, mIoU, mIoU over the classes covering >= 1% of the reference's
    pixels; with --labels, mIoU against ground truth and its drop in points; saliency: CC, KLD, SIM, NSS) and
    gates chosen by each candidate's precision (segmentation: pixel agreement and miou_major, which one stray
    pixel cannot flip). Each side is a zoo name or package.module:factory (PyTorch), an .onnx file (ONNX
    Runtime) or a built artifact (its sidecar's backend); --set and --weights apply to the PyTorch sides.
    Exit status 1 when a candidate fails its gates (2: bad input)."""
    if report is not None:
        check_output_path(report, force=force)
    parsed_gates = tuple(parse_gate(g) for g in gates)
    truth_gates = [g.describe() for g in parsed_gates if METRICS[g.metric].needs_labels]
    if truth_gates and not labels:
        raise ConfigConflict(f"gate {truth_gates[0]} is measured against ground truth; add --labels DIR")
    chosen = tuple(p.strip() for p in providers.split(",") if p.strip()) if providers else None
    options = parse_options(set_options)
    shape = parse_shape(input_shape) if input_shape else None  # before any model is built
    for source in (reference, *candidates):
        if not is_file_target(source):
            check_source_size(source, shape, options, weights)
    opened = []
    for source in (reference, *candidates):
        torch_side = not is_file_target(source)
        progress(f"loading {source}")
        opened.append(open_target(source, options=options if torch_side else None,
                                  weights=weights if torch_side else None, allow_partial=allow_partial,
                                  trust_checkpoint=trust_checkpoint, task=task,  # type: ignore[arg-type]
                                  threads=threads, **given(providers=chosen)))
    input_set = resolve_inputs(opened, inputs=inputs, random=random_count, input_shape=shape, limit=limit,
                               **given(seed=seed))
    check_run_fits(opened, input_set.shape)
    progress(f"inputs: {input_set.description}")
    settings = ParitySettings(
        gates=parsed_gates, precision=precision, localize=localize,
        reference_onnx=reference_onnx, localize_tolerance=localize_tol, labels=labels,
        **given(atol=atol, rtol=rtol, top_k=top_k, providers=chosen))
    result = run_parity(opened[0], opened[1:], input_set, settings, progress)
    if as_json:
        echo_json(result.to_dict(), DONE if result.passed else CHECK_FAILED)
    else:
        click.echo(text_report(result))
    if report is not None:
        write_text(report, markdown_report(result), force=force)
        progress(f"wrote {report}")
    if not result.passed:
        raise CheckFailed(result.summary())

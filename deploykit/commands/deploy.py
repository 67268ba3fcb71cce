"""`deploykit deploy`: the whole flow in one command."""

from __future__ import annotations

from pathlib import Path

import click

from deploykit.calib.data import calibration_data
from deploykit.commands._inputs import reads
from deploykit.commands._options import (
    echo_json,
    json_option,
    model_source_options,
    progress,
    seconds,
    threads_option,
)
from deploykit.commands.build import backend_option
from deploykit.errors import CHECK_FAILED, DONE, CheckFailed, ConfigConflict, InputError
from deploykit.io.output_checks import check_output_dir
from deploykit.pipeline.deploy import DeployOptions, run_deploy
from deploykit.pipeline.report import summary_lines
from deploykit.pipeline.verdict import Verdict
from deploykit.precision.budget import parse_budget
from deploykit.precision.table import PRECISIONS
from deploykit.zoo.sources import USER_TASK, is_factory_path, parse_options, parse_shape, spec_for_source


@click.command()
@click.argument("model")
@model_source_options
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for all outputs.")
@click.option("--precisions", default=None,
              help=f"Comma-separated: {','.join(PRECISIONS)} (default: all {len(PRECISIONS)}, but fp16 only "
                   "where a backend runs float16 natively, as a GPU does, and int8 only with --calib-data).")
@backend_option
@click.option("--calib-data", default=None, help="INT8/FP16 calibration: image folder, .npz, or 'synthetic'.")
@click.option("--calib-n", type=click.IntRange(min=1), default=None, help="Calibration images to use (default 64).")
@click.option("--accuracy-budget", default=None, metavar="METRIC>=X", help="INT8 budget, e.g. pixel_agreement>=0.995.")
@click.option("--inputs", default=None, help="Parity images (default: the calibration folder, else sample photos).")
@click.option("--labels", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Ground-truth masks (PNG class indices, DIR/<image name>.png) for the parity images: adds mIoU "
                   "against them and its drop in points from PyTorch (see `deploykit parity --labels`), and "
                   "--accuracy-budget 'miou_drop<=0.5' when the --calib-data images have masks there too.")
@click.option("--input-shape", default=None, metavar="N,C,H,W",
              help="Shape N,C,H,W: export traces it, parity feeds one image at a time at C,H,W, bench times batch 1 "
                   "(which the verdict compares) and batch N where N > 1.")
@click.option("--bench-seconds", type=seconds(open_=True), default=None,
              help="Timed seconds per contender, all round-robin in one run (default 2).")
@threads_option("CPU threads for every runtime (default: all cores).")
@click.option("--rerun", is_flag=True, help="Redo every step even where its inputs did not change.")
@click.option("--force", is_flag=True, help="Write into an existing --out that holds other files (a deploy's own "
              "folder is resumed without it).")
@click.option("--require", type=click.Choice(list(PRECISIONS)), default=None, metavar="PRECISION",
              help="Exit status 1 unless the verdict ships this precision, computing in it (e.g. --require int8 in "
                   "CI: not an int8 file whose nodes were all kept in float).")
@click.option("--print-report", is_flag=True, help="Also print report.md (the summary is printed either way).")
@json_option
@reads("model", "weights", "calib_data", "inputs", "labels")
def deploy(model: str, set_options: tuple[str, ...], weights: str | None, allow_partial: bool,
           trust_checkpoint: bool, task: str | None,
           out: str, precisions: str | None, backend: str | None, calib_data: str | None, calib_n: int | None,
           accuracy_budget: str | None, inputs: str | None, labels: str | None, input_shape: str | None,
           bench_seconds: float | None,
           threads: int | None, rerun: bool, force: bool, require: str | None, print_report: bool,
           as_json: bool) -> None:
    """Take MODEL from PyTorch to verified artifacts: export to ONNX, build each precision, compare each with
    PyTorch on the task, benchmark, and write report.md, report.html (with plots) and summary.json to --out.
    Prints progress, then a short summary ending with the verdict. Re-running skips the steps whose inputs did
    not change. Exit status 0 when the verdict ships an artifact (candidates that fail their gates are named in
    it), 1 when none passes or --require's precision is not the one shipped."""
    check_output_dir(out)
    chosen = tuple(p.strip() for p in precisions.split(",")) if precisions else None
    if require is not None and chosen is not None and require not in chosen:
        raise ConfigConflict(f"--require {require} is not among --precisions {precisions}; add it")
    _early_checks(model, task, accuracy_budget, labels, inputs or calib_data)
    if calib_data and Path(calib_data).suffix in (".npy", ".npz") and Path(calib_data).is_file():
        calibration_data(calib_data, input_shape=None, preprocessing=None)  # a bad array fails before the export

    opts = DeployOptions(
        source=model, out=Path(out), options=parse_options(set_options), weights=weights,
        allow_partial=allow_partial, trust_checkpoint=trust_checkpoint, task=task,  # type: ignore[arg-type]
        precisions=chosen,
        backend=backend, calib_data=calib_data, calib_n=calib_n, accuracy_budget=accuracy_budget, inputs=inputs,
        input_shape=parse_shape(input_shape) if input_shape else None,  # type: ignore[arg-type]
        bench_seconds=bench_seconds, threads=threads, rerun=rerun, force=force, labels=labels, require=require,
    )
    result = run_deploy(opts, progress=progress)
    failed = _failed_check(result.verdict, result.require, result.out)
    if as_json:
        echo_json(result.to_dict(), CHECK_FAILED if failed else DONE)
    else:
        if print_report:
            click.echo((result.out / "report.md").read_text(encoding="utf-8"))
        click.echo("\n".join(summary_lines(result, result.out / "report.html")))
    if failed:
        raise CheckFailed(failed)


def _failed_check(verdict: Verdict, require: str | None, out: Path) -> str:
    """Why the deploy's check failed ("" when the verdict ships an artifact, of the --require precision)."""
    if verdict.ship is None:
        return f"nothing to ship: no artifact passes every parity gate (the verdict above; report in {out})"
    return verdict.unmet(require)


def _early_checks(model: str, task: str | None, budget: str | None, labels: str | None,
                  parity_images: str | None) -> None:
    """What can be refused before the export starts: an unknown zoo name, a malformed budget, --labels
    without a folder of images to match it to."""
    if not is_factory_path(model):  # a zoo name, or a file or folder given by mistake (spec_for_source says so)
        task = task or spec_for_source(model).task
    task = task or USER_TASK  # what export will record: a budget in pixel_agreement was refused, parity scored it
    if budget is not None and parse_budget(budget, task).needs_labels and labels is None:
        raise ConfigConflict(f"accuracy budget {budget} is measured against ground truth; add --labels DIR")
    if labels is not None:
        if not Path(labels).is_dir():
            raise InputError(f"--labels {labels} is not a folder; give the folder of ground-truth PNG masks")
        if not parity_images or not Path(parity_images).is_dir():
            raise ConfigConflict("--labels matches masks to the parity images by file name; give --inputs DIR "
                                 "(or --calib-data DIR) as a folder of images")

"""`deploykit export`: a PyTorch model to a verified ONNX file."""

from __future__ import annotations

import click

from deploykit.commands._inputs import reads
from deploykit.commands._options import echo_json, force_option, json_option, model_source_options, progress
from deploykit.errors import CHECK_FAILED, DONE, CheckFailed
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.exporters import EXPORTERS
from deploykit.graph.heads import HEADS
from deploykit.io.output_checks import check_output_path
from deploykit.report.format import text_table
from deploykit.zoo.sources import check_source_size, is_factory_path, load_model, parse_options, parse_shape


@click.command()
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@model_source_options
@click.option("--input-shape", default=None, metavar="N,C,H,W", help="Export shape (default: the model's size).")
@click.option("--static", is_flag=True, help="Fix batch, height and width (default: all three dynamic).")
@click.option("--size-multiple", type=click.IntRange(min=1), default=None, metavar="N",
              help="Height and width must be multiples of N (verification keeps them so; default: the zoo's "
                   "value, or detected for a user model).")
@click.option("--opset", type=click.IntRange(7, 24), default=None, help="ONNX opset (default 18).")
@click.option("--exporter", type=click.Choice(list(EXPORTERS)), default=None,
              help="torch.onnx exporter (default: the one the model needs; TorchScript is much faster).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim (it is kept only where parity still holds).")
@click.option("--head", type=click.Choice(list(HEADS)), default=None,
              help="Append an output head: argmax (segmentation: an N,H,W uint8 class map instead of logits) or "
                   "normalize (saliency: per-image min-max to [0, 1]).")
@force_option
@json_option
@reads("model", "weights")
def export(model: str, output: str, set_options: tuple[str, ...], weights: str | None, allow_partial: bool,
           trust_checkpoint: bool, task: str | None, input_shape: str | None, static: bool,
           size_multiple: int | None, opset: int | None, exporter: str | None, no_simplify: bool, head: str | None,
           force: bool, as_json: bool) -> None:
    """Export MODEL (a zoo name or package.module:factory) to ONNX. The result is checked, simplified where
    parity still holds, carries its metadata, and is verified in ONNX Runtime against PyTorch on two
    differently shaped inputs; a model beyond tolerance is not written and the command exits 1."""
    check_output_path(output, force=force)
    shape = parse_shape(input_shape) if input_shape else None
    if shape is None and is_factory_path(model):
        raise click.UsageError("a user model needs --input-shape N,C,H,W")
    check_source_size(model, shape, parse_options(set_options), weights)
    progress(f"building {model}")
    loaded = load_model(model, options=parse_options(set_options), weights=weights, allow_partial=allow_partial,
                        task=task, trust_checkpoint=trust_checkpoint)  # type: ignore[arg-type]
    for note in loaded.weight_notes():
        progress(note)
    result = onnx_from_torch(loaded, output, input_shape=shape, dynamic=not static,  # type: ignore[arg-type]
                             opset=opset, exporter=exporter, simplify=not no_simplify,
                             force=force, progress=progress, size_multiple=size_multiple, head=head)
    rows = [["x".join(map(str, c.input_shape)), name, m.max_abs, m.cosine, "ok" if c.passed else "FAIL"]
            for c in result.checks for name, m in c.outputs.items()]
    if as_json:
        echo_json(result.to_dict(), DONE if result.passed else CHECK_FAILED)
    else:
        click.echo(text_table(["input", "output", "max abs err", "cosine", "verdict"], rows))
        click.echo(f"{result.simplify_note}; {result.seconds:.1f} s")
    if not result.passed:
        raise CheckFailed(f"{result.mismatch()} (table above); {output} was not written")
    if not as_json:
        click.echo(f"wrote {result.path} ({result.exporter} exporter, opset {result.opset}, "
                   f"{'dynamic' if result.dynamic else 'static'} shapes"
                   f"{f'; your {result.model_dtype} model as float32' if result.as_float32 else ''})")

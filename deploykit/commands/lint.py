"""`deploykit lint`: check an ONNX model against TensorRT's ONNX support, without a GPU."""

from __future__ import annotations

import click

from deploykit.backends.base import BACKENDS
from deploykit.commands._options import echo_json, json_option
from deploykit.errors import CHECK_FAILED, DONE, CheckFailed
from deploykit.graph.lint import TARGETS, lint_onnx


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help=f"What to check against (default: {TARGETS[0]}, the ONNX parser of "
                   f"{' and '.join(b.title for b in BACKENDS.values() if b.lint_target == TARGETS[0])} 10.x/11.x).")
@json_option
def lint(model: str, target: str | None, as_json: bool) -> None:
    """Check MODEL.onnx's operators, attributes and opset against TensorRT's ONNX parser (onnx-tensorrt's
    operators.md), and in an INT8 Q/DQ graph the placements TensorRT will not fuse (unfused dequantize, Concat
    scales, residual Adds, INT8 around Resize, grouped convs in INT8): each finding names the node, says why,
    and says which fix deploykit offers.
    Exit status 0 when TensorRT should parse the model, 1 when a finding is an error, 2 when MODEL is
    unusable. build-engine runs the same checks before building a TensorRT engine."""
    report = lint_onnx(model, target=target)
    if as_json:
        echo_json(report.to_dict(), DONE if report.ok else CHECK_FAILED)
    else:
        for finding in report.findings:
            click.echo(f"{finding.severity:<7} {finding.node} ({finding.op}) [{finding.rule}]")
            click.echo(f"        why: {finding.why}")
            click.echo(f"        fix: {finding.fix}")
        click.echo(report.summary())
    if not report.ok:
        raise CheckFailed(report.summary())

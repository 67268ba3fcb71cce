"""The `deploykit` command line. Commands live in deploykit.commands; errors become messages here, once."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from deploykit import __version__
from deploykit.commands.bench import bench
from deploykit.commands.build import build_engine
from deploykit.commands.deploy import deploy
from deploykit.commands.doctor import doctor
from deploykit.commands.export import export
from deploykit.commands.lint import lint
from deploykit.commands.models import models
from deploykit.commands.package import package
from deploykit.commands.parity import parity
from deploykit.commands.serve import serve
from deploykit.errors import DeployKitError

EXAMPLES = {
    "doctor": "deploykit doctor --json",
    "models": "deploykit models deeplabv3plus_xception65",
    "export": "deploykit export deeplabv3plus -o deeplab.onnx",
    "build-engine": "deploykit build-engine deeplab.onnx --int8 --calib-data photos/ -o deeplab.int8.ort.onnx",
    "lint": "deploykit lint deeplab.onnx --target tensorrt",
    "deploy": "deploykit deploy deeplabv3plus --calib-data photos/ --out deploy/deeplab",
    "package": "deploykit package --triton deeplab.int8.onnx --out model_repository",
    "parity": "deploykit parity deeplabv3plus_mobilenetv2 model.onnx model.int8.onnx --localize",
    "bench": "deploykit bench model.int8.onnx --batch 1,4 -o run.json (or: deploykit bench kernels --quick)",
    "serve": "deploykit serve deeplab.int8.ort.onnx --port 8000",
}


class DeployKitGroup(click.Group):
    """Lists each command with a summary and an example; turns DeployKitError into one line and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # the order of the flow, not the alphabet

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            rows.append((name, command.get_short_help_str(limit=200)))
            if name in EXAMPLES:
                rows.append(("", f"e.g. {EXAMPLES[name]}"))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DeployKitError as exc:
            if _debug(ctx):
                raise
            click.echo(f"deploykit: error: {exc}", err=True)
            ctx.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("deploykit: interrupted; outputs of unfinished steps were not written", err=True)
            ctx.exit(130)
        except Exception as exc:
            if _debug(ctx):
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            click.echo(f"deploykit: unexpected {type(exc).__name__}: {first} "
                       "(a bug in deploykit; rerun with --debug for the traceback and report it)", err=True)
            ctx.exit(1)


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("DEPLOYKIT_DEBUG") == "1"


@click.group(cls=DeployKitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="deploykit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """deploykit: PyTorch segmentation and saliency models to fast, verified ONNX Runtime and TensorRT
    artifacts. ONNX Runtime on CPU is the default everywhere; TensorRT is used where a GPU and TensorRT are."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


for _command in (doctor, models, export, build_engine, parity, bench, deploy, lint, package, serve):
    cli.add_command(_command)


def main() -> None:
    cli.main(prog_name="deploykit", args=sys.argv[1:])


if __name__ == "__main__":
    main()

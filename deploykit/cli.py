"""The `deploykit` command line. Commands live in deploykit.commands, listed in COMMANDS; errors become messages
here, once."""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

import click

from deploykit import __version__
from deploykit.errors import DeployKitError


@dataclass(frozen=True)
class Command:
    """One command: its module in deploykit.commands (imported only when the command runs or shows its help, so
    `deploykit --help` starts without torch), the attribute there, and what `deploykit --help` shows."""

    name: str
    module: str
    attribute: str
    summary: str
    example: str


COMMANDS = {c.name: c for c in (  # in the order of the flow, which --help keeps
    Command("doctor", "doctor", "doctor",
            "Report versions, ONNX Runtime providers, each backend's state, GPUs and CPU.", "deploykit doctor --json"),
    Command("models", "models", "models", "List the model zoo, or show one model's spec and options.",
            "deploykit models deeplabv3plus_xception65"),
    Command("export", "export", "export", "Export a zoo or user model to ONNX, verified against PyTorch.",
            "deploykit export deeplabv3plus -o deeplab.onnx"),
    Command("build-engine", "build", "build_engine", "Build an FP32/FP16/INT8 artifact (ONNX Runtime or TensorRT).",
            "deploykit build-engine deeplab.onnx --int8 --calib-data photos/ -o deeplab.int8.ort.onnx"),
    Command("parity", "parity", "parity", "Compare a reference with candidates on task metrics; localise divergence.",
            "deploykit parity deeplabv3plus_mobilenetv2 model.onnx model.int8.onnx --localize"),
    Command("bench", "bench", "bench", "Latency/throughput of a model, or the dilated/separable kernel sweep.",
            "deploykit bench model.int8.onnx --batch 1,4 -o run.json (or: deploykit bench kernels --quick)"),
    Command("deploy", "deploy", "deploy", "Export, build every precision, check parity, bench, and write a report.",
            "deploykit deploy deeplabv3plus --calib-data photos/ --out deploy/deeplab"),
    Command("lint", "lint", "lint", "Check an ONNX model against TensorRT's ONNX support (no GPU needed).",
            "deploykit lint deeplab.onnx --target tensorrt"),
    Command("package", "package", "package", "Package artifacts as a Triton Inference Server model repository.",
            "deploykit package --triton deeplab.int8.onnx --out model_repository"),
    Command("serve", "serve", "serve", "Serve artifacts over the KServe v2 protocol on Triton's server (batching).",
            "deploykit serve deeplab.int8.ort.onnx --port 8000"),
)}


class DeployKitGroup(click.Group):
    """Lists each command with a summary and an example; turns DeployKitError into one line and exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)  # the order of the flow, not the alphabet

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        command: click.Command = getattr(importlib.import_module(f"deploykit.commands.{entry.module}"),
                                         entry.attribute)
        command.short_help = entry.summary
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for entry in COMMANDS.values():
            rows += [(entry.name, entry.summary), ("", f"e.g. {entry.example}")]
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


def main() -> None:
    cli.main(prog_name="deploykit", args=sys.argv[1:])


if __name__ == "__main__":
    main()

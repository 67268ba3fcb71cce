"""The `deploykit` command line. Commands live in deploykit.commands, listed in COMMANDS; errors become messages
here, once."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass
from typing import Any

import click

from deploykit import __version__
from deploykit.commands import JSON_PRINTED, JSON_STREAM, JSON_WANTED
from deploykit.environment import runtime_telemetry_off
from deploykit.errors import (
    BAD_INPUT,
    BUG,
    CHECK_FAILED,
    INTERRUPTED,
    OUTCOMES,
    SIGNALLED,
    CheckFailed,
    DeployKitError,
    Outcome,
    Terminated,
    broken_dependency,
    first_line,
    out_of_memory,
)
from deploykit.io.signals import interrupts_raise
from deploykit.io.std_streams import (
    BROKEN_PIPE_STATUS,
    reopen_closed,
    silence,
    undecodable,
    unless_hung_up,
    write_failure,
)
from deploykit.io.temporaries import settle_tempdir


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
    Command("build-engine", "build", "build_engine",
            "Build an FP32/FP16/INT8 artifact (ONNX Runtime, OpenVINO or TensorRT).",
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


_ARGS = "deploykit.args"  # ctx.meta: the argument list as given, to name the command a usage error is about


class DeployKitGroup(click.Group):
    """Lists each command with a summary and an example; the one place that turns how a command ended into
    its exit status and one line (deploykit.errors.OUTCOMES)."""

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

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Exit status (every command; --json output carries it as outcome and exit_status)"):
            formatter.write_dl([(f"{o.exit_status} {o.name}", o.meaning) for o in OUTCOMES.values()])
            # a server's stop is its normal end: the signal asks for the drain, not for an interruption
            formatter.write_text("serve ends on SIGINT, SIGTERM, SIGHUP or SIGQUIT after draining its requests: "
                                 "0, or 1 when requests were cut off")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[JSON_WANTED] = "--json" in args
        ctx.meta[_ARGS] = list(args)
        for arg in args:  # a file name the shell passed as bytes that are not UTF-8 cannot go into JSON or reports
            why = undecodable(arg)
            if why is not None:
                _end(ctx, BAD_INPUT, f"deploykit: error: argument {_printable(arg)} {why}")
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:  # deploykit's own options (`deploykit --nope`)
            _end_usage(ctx, exc)
            raise  # not reached: _end exits

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        with _writes_that_fail_end():  # --help and --version print here, before click's own EPIPE handling
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _writes_that_fail_end():  # also a failure of the one line below
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        runtime_telemetry_off()  # before a command's module imports ONNX Runtime
        settle_tempdir()
        try:
            with interrupts_raise(), _stdout_for_json_only(ctx):
                return super().invoke(ctx)
        except CheckFailed as exc:
            _end(ctx, CHECK_FAILED, f"deploykit: check failed: {exc}")
        except DeployKitError as exc:
            if _debug(ctx):
                raise
            _end(ctx, BAD_INPUT, f"deploykit: error: {exc}")
        except click.UsageError as exc:  # a command's arguments and options, or a command that does not exist
            _end_usage(ctx, exc)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Terminated as exc:
            _end(ctx, SIGNALLED[exc.signum], f"deploykit: {_ended_by(exc.signum)}; outputs of unfinished steps "
                                             "were not written")
        except KeyboardInterrupt:
            _end(ctx, INTERRUPTED, "deploykit: interrupted; outputs of unfinished steps were not written")
        except (Exception, GeneratorExit) as exc:  # GeneratorExit: one that escaped a generator of ours
            if _debug(ctx) or write_failure(exc) is not None:
                raise
            if out_of_memory(exc):  # the sizes asked for do not fit this machine: the input's, not a bug
                _end(ctx, BAD_INPUT, f"deploykit: error: out of memory ({first_line(exc, 200)}); use a smaller "
                                     "--input-shape, --batch, model or fewer --threads, or free memory")
            missing = broken_dependency(exc)
            if missing is not None:  # the environment's, not a bug in deploykit
                _end(ctx, BAD_INPUT, f"deploykit: error: {missing} cannot be imported ({first_line(exc, 200)}): "
                                     "deploykit needs it; install or repair the package that provides it in this "
                                     "environment (installing deploykit with pip installs what it needs)")
            first = first_line(exc, 1000, default="")
            _end(ctx, BUG, f"deploykit: unexpected {type(exc).__name__}: {first} "
                           "(a bug in deploykit; rerun with --debug for the traceback and report it)")


@contextmanager
def _writes_that_fail_end() -> Iterator[None]:
    """A write to stdout or stderr that fails ends the command as it ends other tools (deploykit.io.std_streams):
    quietly with 141 when the reader of a pipe left (`deploykit models | head -1`), with one line and exit status
    2 when the device is full (`> /dev/full`); never as a bug."""
    try:
        yield
    except OSError as exc:
        failure = write_failure(exc)
        if failure is None:
            raise
        if failure == "device":
            with suppress(OSError):  # stderr is the failing one
                click.echo(f"deploykit: error: cannot write the output ({first_line(exc, 200)}): stdout or stderr "
                           "goes to a full device; send it to another file or device", err=True)
        silence()
        raise SystemExit(BROKEN_PIPE_STATUS if failure == "pipe" else BAD_INPUT.exit_status) from None


@contextmanager
def _stdout_for_json_only(ctx: click.Context) -> Iterator[None]:
    """With --json, stdout holds the JSON document alone: whatever else prints to it while the command runs (a
    user's module or model calling print, a library's chatter) goes to stderr."""
    if not ctx.meta.get(JSON_WANTED):
        yield
        return
    ctx.meta[JSON_STREAM] = sys.stdout
    with redirect_stdout(sys.stderr):
        yield


def _ended_by(signum: int) -> str:
    """How a signal other than SIGINT ended the command, in the one line: SIGTERM's is the plain "terminated"."""
    return "terminated" if signum == signal.SIGTERM else f"terminated by {signal.Signals(signum).name}"


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _end(ctx: click.Context, outcome: Outcome, line: str) -> None:
    """One line on stderr (no newline inside it, bytes that are not UTF-8 escaped), the outcome on stdout for
    --json, and the exit status."""
    line = _printable(" ".join(line.splitlines()))
    with unless_hung_up():
        click.echo(line, err=True)
    with unless_hung_up():
        _json_outcome(ctx, outcome, line.split(": ", 2)[-1])
    ctx.exit(outcome.exit_status)


def _end_usage(ctx: click.Context, exc: click.UsageError) -> None:
    """A usage error as the one line every bad input gets, pointing at the help of the command it is about in place
    of click's usage and hint lines. `deploykit` or `deploykit bench` alone still print their help."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        raise exc
    where = exc.ctx.command_path if exc.ctx is not None else _command_named(ctx, ctx.meta.get(_ARGS, []))
    _end(ctx, BAD_INPUT, f"deploykit: error: {exc.format_message().rstrip('.')}; see `{where} --help`")


def _command_named(ctx: click.Context, args: list[str]) -> str:
    """The command an argument list names (`deploykit bench run`), for click's parser errors that carry no
    context (`deploykit doctor --evidence` without its value)."""
    path, command = [ctx.command_path], ctx.command
    for word in args:
        default = getattr(command, "default_command", None)  # `bench --model` is `bench run --model`
        if word.startswith("-") and default is None:
            continue
        sub = command.get_command(ctx, word) if isinstance(command, click.Group) else None
        if sub is None:
            path += [default] if default else []
            break
        path.append(word)
        command = sub
    return " ".join(path)


def _json_outcome(ctx: click.Context, outcome: Outcome, message: str) -> None:
    """With --json, a command that ended before printing its document prints one that says how it ended."""
    if ctx.meta.get(JSON_WANTED) and not ctx.meta.get(JSON_PRINTED):
        click.echo(json.dumps({**outcome.record(), "error": message}, indent=2, sort_keys=True),
                   file=ctx.meta.get(JSON_STREAM))


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
    reopen_closed()  # before any file is opened: one would take a closed descriptor 1 or 2
    try:
        with _writes_that_fail_end():  # click's report of a usage error writes after its own handlers
            cli.main(prog_name="deploykit", args=sys.argv[1:])
    except SystemExit as exc:  # click's standalone mode ends every command with it
        _exit_past_lingering_threads(exc)
        raise


def _exit_past_lingering_threads(end: SystemExit) -> None:
    """End the process now when threads deploykit did not start are still running (all of its own are daemons):
    a thread a user's factory or forward started (a logger's, a loader's) would otherwise make the interpreter
    wait for it forever after the command finished. They are named on stderr, then left unjoined."""
    lingering = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
                 and t.is_alive()]
    if not lingering:
        return
    code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    if end.code is not None and not isinstance(end.code, int):
        print(end.code, file=sys.stderr)
    print(f"deploykit: note: not waiting for {len(lingering)} thread{'s' * (len(lingering) > 1)} the model's code "
          f"started and left running ({', '.join(lingering[:3])}): they end with this process (start them with "
          "daemon=True to say so)", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

"""`deploykit doctor`: what this machine offers deploykit."""

from __future__ import annotations

from typing import Any

import click

from deploykit.commands._options import echo_json, json_option, progress
from deploykit.doctor.machine import probe_machine
from deploykit.doctor.selftest import SelfTestResult
from deploykit.doctor.selftest import selftest as tiny_engine_selftest
from deploykit.doctor.selftest_evidence import check_evidence_folder
from deploykit.doctor.selftest_full import full_selftest
from deploykit.errors import CHECK_FAILED, DONE, CheckFailed


@click.command()
@json_option
@click.option("--selftest", is_flag=True,
              help="Also build a tiny TensorRT engine and check it against ONNX Runtime (needs a GPU; seconds).")
@click.option("--full", is_flag=True,
              help="With --selftest: FP32, FP16 and INT8 engines of a small zoo model and of a tiny graph, parity "
                   "with ONNX Runtime, precision audits, CUDA graphs, dynamic shapes, timing cache and a speed "
                   "comparison, in one verdict (a few minutes).")
@click.option("--evidence", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="With --selftest --full: write versions, GPU, each engine's inspector JSON and audit, the "
                   "figures and the log to DIR (new or empty), to attach to a bug report.")
def doctor(as_json: bool, selftest: bool, full: bool, evidence: str | None) -> None:
    """Report Python, torch, onnx and ONNX Runtime versions, ONNX Runtime's execution providers, each
    backend's state (TensorRT probed by constructing a builder, OpenVINO by its Core listing a CPU device), CUDA
    devices, and the CPU with its flags. With --selftest, build a tiny engine
    and compare it with ONNX Runtime; exit status 1 when the self-test fails, 2 when it cannot run here."""
    if full and not selftest:
        raise click.UsageError("--full extends --selftest: use `deploykit doctor --selftest --full`")
    if evidence is not None and not full:
        raise click.UsageError("--evidence records the full self-test: use `deploykit doctor --selftest --full "
                               "--evidence DIR`")
    machine = probe_machine()
    if full:
        _full_selftest(machine.to_dict() if as_json else None, evidence)
        return
    if as_json:
        data = machine.to_dict()
        result = _selftest() if selftest else None
        if result is not None:
            data["selftest"] = result.to_dict()
        echo_json(data, CHECK_FAILED if result is not None and not result.passed else DONE)
        _check(result)
        return
    click.echo(machine.describe())
    if selftest:
        result = _selftest()
        click.echo(f"selftest        {result.describe()}")
        _check(result)


def _selftest() -> SelfTestResult:
    return tiny_engine_selftest(progress=progress)


def _check(result: SelfTestResult | None) -> None:
    if result is not None and not result.passed:
        raise CheckFailed(f"TensorRT self-test {result.describe()}")


def _full_selftest(as_json: dict[str, Any] | None, evidence: str | None) -> None:
    """The --full verdict (JSON under the environment when as_json is given); exit status 1 when a check fails
    or could not run."""
    folder = check_evidence_folder(evidence) if evidence is not None else None
    result = full_selftest(progress=progress, evidence=folder)
    if as_json is not None:
        echo_json({**as_json, "selftest_full": result.to_dict()}, DONE if result.passed else CHECK_FAILED)
    else:
        click.echo(result.describe())
    if folder is not None:
        click.echo(f"evidence written to {folder}: attach it (zipped) to a bug report", err=as_json is not None)
    if not result.passed:
        bad = [c.name for c in result.checks if c.passed is not True]
        raise CheckFailed(f"TensorRT full self-test: {', '.join(bad)} did not pass (see the verdict above)")

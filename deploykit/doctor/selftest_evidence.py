"""`deploykit doctor --selftest --full --evidence DIR`: what a maintainer needs to judge a GPU run without being
there, in one folder a user zips and attaches to a bug report.

DIR/
  README.txt               what this is and how it was made (first line: SIMULATED when the TensorRT test double
                           ran it: then nothing here is a TensorRT result)
  verdict.txt              the verdict as printed
  summary.json             every check: pass / fail / could not run, detail, seconds, parity and timing figures
  environment.json         versions (Python, torch, ONNX, ONNX Runtime, TensorRT, deploykit), CPU, CUDA devices
  gpu.json                 the GPU the engines were built on (name, compute capability, memory, SMs, driver)
  engines/NAME.inspector.json   the engine inspector's raw JSON for each engine the run built
  engines/NAME.audit.json       the precision audit read from it, with the per-layer keys it saw and used
  engines/NAME.sidecar.json     the engine's sidecar (build options, TensorRT warnings, timing cache record)
  log.txt                  the run's progress messages, then TensorRT's errors and warnings
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import deploykit
from deploykit.backends.tensorrt.audit import inspect_artifact
from deploykit.backends.tensorrt.common import import_tensorrt, process_logger
from deploykit.doctor.machine import probe_machine
from deploykit.doctor.selftest_checks import FullSelfTestResult, error_text
from deploykit.errors import OutputExists
from deploykit.io.output_checks import check_output_dir
from deploykit.io.outputs import write_json, write_text
from deploykit.io.sidecar import read_sidecar, sidecar_path

SIMULATED = ("SIMULATED: this run went through deploykit's TensorRT test double (ONNX Runtime on the CPU behind "
             "TensorRT's API). Nothing in this folder is a TensorRT result; timings are CPU host times.")


def check_evidence_folder(path: str | os.PathLike[str]) -> Path:
    """Fail before the run when DIR cannot be written or already holds files (evidence is never merged)."""
    folder = check_output_dir(path)
    if folder.is_dir() and any(folder.iterdir()):
        raise OutputExists(f"evidence folder {folder} is not empty; give a new folder")
    return folder


def write_evidence(folder: Path, result: FullSelfTestResult, engines: Mapping[str, Path], log: Sequence[str], *,
                   error: str | None = None) -> None:
    """Write the evidence folder (see the module docstring); `error`: why the self-test could not run at all."""
    check_evidence_folder(folder)
    (folder / "engines").mkdir(parents=True, exist_ok=True)
    write_text(folder / "README.txt", _readme(result, error), force=False)
    write_text(folder / "verdict.txt", (error or result.describe()) + "\n", force=False)
    write_json(folder / "summary.json", {**result.to_dict(), "could_not_run": error}, force=False)
    write_json(folder / "environment.json", _environment(), force=False)
    write_json(folder / "gpu.json", _gpu(engines), force=False)
    for name, plan in sorted(engines.items()):
        _engine(folder / "engines", name, plan)
    write_text(folder / "log.txt", _log(log), force=False)


def _readme(result: FullSelfTestResult, error: str | None) -> str:
    lines = [SIMULATED, ""] if result.simulated else []
    lines += [f"deploykit {deploykit.__version__} full TensorRT self-test evidence",
              "made by: deploykit doctor --selftest --full --evidence DIR",
              f"TensorRT {result.tensorrt_version or '(not usable)'} on {result.gpu}; {result.model}",
              f"result: {'could not run: ' + error if error else 'passed' if result.passed else 'FAILED'}",
              "", "files: see deploykit/doctor/selftest_evidence.py (verdict.txt first)"]
    return "\n".join(lines) + "\n"


def _environment() -> dict[str, Any]:
    try:
        return probe_machine().to_dict()
    except Exception as exc:  # evidence is written whatever is broken: say what could not be read
        return {"could_not_probe": error_text(exc)}


def _gpu(engines: Mapping[str, Path]) -> dict[str, Any]:
    """The GPU as the engines' sidecars recorded it, and what torch says of the device (memory, SMs)."""
    gpu: dict[str, Any] = {}
    for plan in engines.values():
        sidecar = read_sidecar(plan) if plan.is_file() else None
        if sidecar is not None:
            gpu["built_on"] = dict(sidecar.device)
            break
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            gpu["torch"] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                            "memory_bytes": props.total_memory, "multiprocessors": props.multi_processor_count,
                            "cuda": torch.version.cuda}
        else:
            gpu["torch"] = "torch sees no CUDA device"
    except Exception as exc:  # torch without CUDA support raises on some calls
        gpu["torch"] = f"could not query: {error_text(exc)}"
    gpu["driver"] = _driver()
    return gpu


def _driver() -> str:
    try:
        import pynvml  # nvidia-ml-py, in deploykit[tensorrt]

        pynvml.nvmlInit()
        return str(pynvml.nvmlSystemGetDriverVersion())
    except Exception as exc:  # not installed, or no NVIDIA driver
        return f"unknown ({error_text(exc)})"


def _engine(folder: Path, name: str, plan: Path) -> None:
    sidecar = read_sidecar(plan) if plan.is_file() else None
    if sidecar is not None:
        write_text(folder / f"{name}.sidecar.json", sidecar_path(plan).read_text(encoding="utf-8"), force=False)
    try:
        inspection = inspect_artifact(plan)
    except Exception as exc:  # the evidence says why an engine could not be inspected, and goes on
        write_text(folder / f"{name}.inspector-error.txt", error_text(exc) + "\n", force=False)
        return
    write_text(folder / f"{name}.inspector.json", inspection.raw, force=False)
    write_json(folder / f"{name}.audit.json", {**inspection.audit.to_dict(), "describe": inspection.audit.describe()},
               force=False)


def _log(log: Sequence[str]) -> str:
    lines = list(log)
    try:
        kept = process_logger(import_tensorrt()).kept()
        lines += ["", f"TensorRT errors and warnings ({len(kept)}, oldest first):"]
        lines += [f"[{kind}] {message}" for kind, message in kept]
    except Exception as exc:  # TensorRT not importable: the progress log is still worth having
        lines += ["", f"TensorRT's log could not be read: {error_text(exc)}"]
    return "\n".join(lines) + "\n"


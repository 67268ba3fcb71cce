"""What `deploykit bench TARGET...` times: a runner per requested backend, opened from each target.

A zoo name or `package.module:factory` runs in PyTorch eager ("torch") or, exported on the fly to a temporary ONNX
file, in ONNX Runtime ("onnxruntime", "onnxruntime-cuda"); an .onnx file runs in ONNX Runtime; a built artifact
runs on the backend its sidecar names. A backend that cannot run a target here is skipped with its reason, never
half-run. `run_bench` opens the targets and hands them all to deploykit.bench.run.bench_targets, which times them in
one round-robin run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from deploykit.backends.base import BACKENDS, BENCH_CHOICES, ONNX_RUNNER, REFERENCE, self_described
from deploykit.bench.interleave import TimingConfig
from deploykit.bench.run import BenchReport, bench_targets, check_batches
from deploykit.bench.runners import BACKEND_CHOICES, TORCH_COUNT, BenchTarget, Skipped, as_bench_target, torch_madds
from deploykit.errors import BackendUnavailable, ConfigConflict, ExportError, InputError
from deploykit.export.onnx_from_torch import onnx_from_torch
from deploykit.io.model_files import require_file
from deploykit.io.outputs import scratch_folder
from deploykit.io.sidecar import read_sidecar
from deploykit.runner import Target
from deploykit.targets.resolve import FILE_TARGET_HINT, is_file_target, open_target
from deploykit.types import Progress


def _providers(choice: str) -> tuple[str, ...]:
    return BENCH_CHOICES[choice].bench_choices[choice] or ("cpu",)


def _file_target(path: str, choice: str, threads: int | None, cuda_graph: bool) -> BenchTarget:
    sidecar = read_sidecar(path) if os.path.isfile(path) else None
    built_for = (BACKENDS[sidecar.backend] if sidecar and sidecar.backend in BACKENDS
                 else self_described(path) or ONNX_RUNNER)
    wanted = BENCH_CHOICES[choice]
    if wanted.reference:
        raise BackendUnavailable(f"a file has no PyTorch module; bench the zoo model by name for {choice}")
    if wanted is not built_for:
        if not built_for.runs_onnx:
            raise BackendUnavailable(f"{Path(path).name} is a {built_for.title} {built_for.artifact}; bench it "
                                     f"with --backend {built_for.name}")
        raise BackendUnavailable(f"{wanted.title} runs its own {wanted.artifact}s: build one first with deploykit "
                                 f"build-engine --backend {wanted.name}, then bench that")
    opened = open_target(path, providers=_providers(choice), threads=threads)
    if cuda_graph and hasattr(opened.runner, "cuda_graph"):
        opened.runner.cuda_graph = True
    return as_bench_target(opened, choice)


def _model_targets(target: str, backends: Sequence[str], *, threads: int | None, model_options: Mapping[str, Any],
                   stack: ExitStack, progress: Progress, opened: Target | None = None
                   ) -> tuple[list[BenchTarget], list[Skipped]]:
    if opened is None:
        progress(f"building {target}")
        opened = open_target(target, threads=threads, **model_options)
    out: list[BenchTarget] = []
    skipped: list[Skipped] = []
    exported: str | None = None
    for choice in backends:
        entry = BENCH_CHOICES[choice]
        if entry.reference:
            out.append(as_bench_target(opened, choice))
        elif entry.runs_onnx:
            try:
                exported = exported or _export_temporary(opened, stack, progress)
                as_onnx = open_target(exported, providers=_providers(choice), threads=threads)
                if entry is not ONNX_RUNNER:  # another backend that runs ONNX directly times its own runner
                    as_onnx.runner = entry.open(Path(exported), None, providers=_providers(choice), threads=threads)
            except BackendUnavailable as exc:
                skipped.append(Skipped(choice, str(exc)))
                continue
            bench = as_bench_target(as_onnx, choice, label=opened.label)
            bench.madds_at, bench.madds_source = as_bench_target(opened, REFERENCE.name).madds_at, TORCH_COUNT
            out.append(bench)
        else:
            skipped.append(Skipped(choice, f"a PyTorch model needs an {entry.artifact} first: deploykit "
                                           f"build-engine --backend {entry.name}, then bench the {entry.artifact}"))
    return out, skipped


def _export_temporary(opened: Target, stack: ExitStack, progress: Progress) -> str:
    assert opened.loaded is not None
    folder = stack.enter_context(scratch_folder("deploykit-bench-"))
    path = os.path.join(folder, "model.onnx")
    result = onnx_from_torch(opened.loaded, path, dynamic=True, force=True, progress=progress)
    if not result.passed:
        raise ExportError(f"{opened.label} does not export faithfully; run deploykit export for details")
    return path


def open_bench_targets(target: str | Target, backends: Sequence[str] | None, *, threads: int | None,
                       model_options: Mapping[str, Any], stack: ExitStack, progress: Progress,
                       cuda_graph: bool = False, madds_of: Target | None = None
                       ) -> tuple[list[BenchTarget], list[Skipped]]:
    """Runners for `target` on each backend (default: the target's own); see _open_bench_targets. With
    `madds_of` (a PyTorch target), multiply-adds are counted on that model instead of the target's graph, whose
    form (fused or quantized convs) can hide some."""
    out, skipped = _open_bench_targets(target, backends, threads=threads, model_options=model_options,
                                       stack=stack, progress=progress, cuda_graph=cuda_graph)
    if madds_of is not None and madds_of.loaded is not None:
        for bench in out:
            bench.madds_at, bench.madds_source = torch_madds(madds_of.loaded), TORCH_COUNT
    return out, skipped


def _open_bench_targets(target: str | Target, backends: Sequence[str] | None, *, threads: int | None,
                        model_options: Mapping[str, Any], stack: ExitStack, progress: Progress,
                        cuda_graph: bool) -> tuple[list[BenchTarget], list[Skipped]]:
    """Runners for `target` on each backend (default: the target's own). `stack` owns temporary exports.
    `model_options` are open_target's options/weights/allow_partial/task for PyTorch models; a Target already
    opened (deploy's PyTorch model, built once) is used as it is."""
    unknown = [b for b in backends or () if b not in BACKEND_CHOICES]
    if unknown:
        raise InputError(f"unknown backend {', '.join(unknown)}; choose from {', '.join(BACKEND_CHOICES)}")
    if isinstance(target, Target) and target.loaded is not None:
        return _model_targets(target.label, backends or [REFERENCE.name], threads=threads, model_options={},
                              stack=stack, progress=progress, opened=target)
    if isinstance(target, Target):  # an opened file: its own backend only
        return [as_bench_target(target, target.runner.backend)], []
    if not is_file_target(target):
        return _model_targets(target, backends or [REFERENCE.name], threads=threads, model_options=model_options,
                              stack=stack, progress=progress)
    require_file(target, "model", FILE_TARGET_HINT)
    if model_options.get("options") or model_options.get("weights") is not None:
        raise ConfigConflict(f"--set and --weights apply to PyTorch models; {target} is a file with its weights "
                             "inside")
    sidecar = read_sidecar(target)
    out: list[BenchTarget] = []
    skipped: list[Skipped] = []
    for backend in backends or [sidecar.backend if sidecar else (self_described(target) or ONNX_RUNNER).name]:
        try:
            out.append(_file_target(target, backend, threads, cuda_graph))
        except (BackendUnavailable, ImportError) as exc:
            skipped.append(Skipped(backend, str(exc)))
    return out, skipped


def run_bench(targets: str | Target | Sequence[str | Target], *, backends: Sequence[str] | None = None,
              batches: Sequence[int] = (1,), input_shape: tuple[int, ...] | None = None,
              config: TimingConfig | None = None, threads: int | None = None,
              model_options: Mapping[str, Any] | None = None, roofline: bool = True, cuda_graph: bool = False,
              progress: Progress | None = None, madds_of: Target | None = None,
              quick_peaks: bool = False) -> BenchReport:
    """Time every target on each backend and batch, all in one round-robin run (deploykit.bench.interleave).
    Backends that cannot run here are listed in `skipped`. `backends` apply to every target given by name (an
    opened Target keeps its own unless it is a PyTorch model). `madds_of`: a PyTorch target to count
    multiply-adds on (see open_bench_targets); `quick_peaks`: see bench_targets."""
    say = progress or (lambda _msg: None)
    check_batches(batches)
    listed = [targets] if isinstance(targets, (str, Target)) else list(targets)
    if not listed:
        raise InputError("nothing to bench; give at least one target")
    with ExitStack() as stack:
        opened: list[BenchTarget] = []
        skipped: list[Skipped] = []
        for target in listed:
            found, missed = open_bench_targets(target, backends, threads=threads, model_options=model_options or {},
                                               stack=stack, progress=say, cuda_graph=cuda_graph, madds_of=madds_of)
            opened += found
            skipped += missed
        if cuda_graph and not any(getattr(t.runner, "cuda_graph", False) for t in opened):
            # timed as usual, the figures would pass for CUDA-graph replay's
            raise InputError("--cuda-graph applies to none of the targets: only TensorRT engines (a .plan "
                             "build-engine wrote) replay as CUDA graphs; drop --cuda-graph or bench an engine")
        name = ", ".join(t.label if isinstance(t, Target) else t for t in listed)
        return bench_targets(opened, skipped, name=name, batches=batches, input_shape=input_shape, config=config,
                             threads=threads, roofline=roofline, progress=say, quick_peaks=quick_peaks)

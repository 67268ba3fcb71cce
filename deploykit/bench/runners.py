"""What `deploykit bench TARGET` times: a runner per requested backend, with what bench needs to know.

Targets are resolved by deploykit.backends.targets.open_target. A zoo name or `package.module:factory` runs in
PyTorch eager ("torch") or, exported on the fly to a temporary ONNX file, in ONNX Runtime ("onnxruntime",
"onnxruntime-cuda"); an .onnx file runs in ONNX Runtime; a built artifact runs on the backend its sidecar
names. A backend that cannot run a target here is skipped with its reason, never half-run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.backends.base import BACKENDS, BENCH_CHOICES, REFERENCE, Runner, self_described
from deploykit.backends.targets import ONNX_RUNNER, Target, is_file_target, open_target
from deploykit.errors import BackendUnavailable, ConfigConflict, InputError
from deploykit.io.outputs import scratch_folder
from deploykit.io.sidecar import read_sidecar
from deploykit.types import Progress

BACKEND_CHOICES = tuple(BENCH_CHOICES)  # from the backend table: each backend's bench_choices
MaddsAt = Callable[[tuple[int, ...]], int | None]
TORCH_COUNT = "PyTorch modules (deploykit.zoo.flops)"
ONNX_COUNT = "ONNX graph (Conv/ConvTranspose/Gemm/MatMul, deploykit.bench.macs)"


@dataclass
class BenchTarget:
    label: str
    kind: str  # "torch" | "onnx" | "artifact"
    backend: str
    precision: str
    runner: Runner
    default_hw: tuple[int, int] | None  # the model's own input size, when it has one
    madds_at: MaddsAt  # multiply-adds of one run at a full input shape (None when unknown)
    madds_source: str


@dataclass(frozen=True)
class Skipped:
    backend: str
    reason: str


def _onnx_madds(path: str | os.PathLike[str]) -> MaddsAt:
    from deploykit.bench.macs import count_onnx_macs

    def at(shape: tuple[int, ...]) -> int | None:
        counted = count_onnx_macs(path, shape)
        return None if counted.unresolved and not counted.madds else counted.madds
    return at


def _torch_madds(loaded: Any) -> MaddsAt:
    from deploykit.zoo.flops import complexity_at, count_complexity
    from deploykit.zoo.sources import is_factory_path

    def at(shape: tuple[int, ...]) -> int | None:
        nchw = (shape[0], shape[1], shape[2], shape[3])
        if not is_factory_path(loaded.spec.name):
            return complexity_at(lambda: loaded.spec.build(**loaded.options), nchw).madds
        return count_complexity(loaded.module, nchw).madds  # a user factory may not build on the meta device
    return at


def _no_madds(_shape: tuple[int, ...]) -> int | None:
    return None


def as_bench_target(opened: Target, backend: str, label: str | None = None) -> BenchTarget:
    if opened.onnx_path is not None:
        madds, source = _onnx_madds(opened.onnx_path), ONNX_COUNT
    elif opened.loaded is not None:
        madds, source = _torch_madds(opened.loaded), TORCH_COUNT
    else:
        madds, source = _no_madds, "unknown (an engine carries no graph to count)"
    name = label or (opened.label if opened.loaded is not None else Path(opened.label).name)
    return BenchTarget(label=name, kind=opened.kind, backend=backend, precision=opened.precision,
                       runner=opened.runner, default_hw=opened.input_size, madds_at=madds, madds_source=source)


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
    from deploykit.errors import ExportError
    from deploykit.export import onnx_from_torch

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
            bench.madds_at, bench.madds_source = _torch_madds(madds_of.loaded), TORCH_COUNT
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
    if not os.path.isfile(target):
        raise InputError(f"{target} does not exist")
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

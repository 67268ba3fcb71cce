"""What bench times: an opened runner with what bench needs to know about it (label, backend, precision, its
model's input size, and how to count its multiply-adds). deploykit.targets.bench opens them from a target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.backends.base import BENCH_CHOICES
from deploykit.graph.macs import count_onnx_macs
from deploykit.runner import Runner, Target
from deploykit.zoo.flops import complexity_at, count_complexity
from deploykit.zoo.sources import is_factory_path, model_code

BACKEND_CHOICES = tuple(BENCH_CHOICES)  # from the backend table: each backend's bench_choices
MaddsAt = Callable[[tuple[int, ...]], int | None]
TORCH_COUNT = "PyTorch modules (deploykit.zoo.flops)"
ONNX_COUNT = "ONNX graph (Conv/ConvTranspose/Gemm/MatMul, deploykit.graph.macs)"


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


def _onnx_madds(path: str | Path) -> MaddsAt:
    def at(shape: tuple[int, ...]) -> int | None:
        counted = count_onnx_macs(path, shape)
        return None if counted.unresolved and not counted.madds else counted.madds
    return at


def torch_madds(loaded: Any) -> MaddsAt:
    def at(shape: tuple[int, ...]) -> int | None:
        nchw = (shape[0], shape[1], shape[2], shape[3])
        if not is_factory_path(loaded.spec.name):
            return complexity_at(lambda: loaded.spec.build(**loaded.options), nchw).madds
        with model_code(loaded.spec, f" (counting multiply-adds on {'x'.join(map(str, nchw))})"):
            return count_complexity(loaded.module, nchw).madds  # a user factory may not build on the meta device
    return at


def _no_madds(_shape: tuple[int, ...]) -> int | None:
    return None


def as_bench_target(opened: Target, backend: str, label: str | None = None) -> BenchTarget:
    if opened.onnx_path is not None:
        madds, source = _onnx_madds(opened.onnx_path), ONNX_COUNT
    elif opened.loaded is not None:
        madds, source = torch_madds(opened.loaded), TORCH_COUNT
    else:
        madds, source = _no_madds, "unknown (an engine carries no graph to count)"
    name = label or (opened.label if opened.loaded is not None else Path(opened.label).name)
    return BenchTarget(label=name, kind=opened.kind, backend=backend, precision=opened.precision,
                       runner=opened.runner, default_hw=opened.input_size, madds_at=madds, madds_source=source)

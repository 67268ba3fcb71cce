"""What bench times: an opened runner with what bench needs to know about it (label, backend, precision, its
model's input size, and how to count its multiply-adds). deploykit.targets.bench opens them from a target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from deploykit.backends.base import BENCH_CHOICES
from deploykit.exporters import TORCH_RUN_COPIES, scaled_forward
from deploykit.graph.macs import arena_bytes, count_onnx_macs
from deploykit.runner import Runner, Target
from deploykit.zoo.flops import count_complexity
from deploykit.zoo.sources import model_code

BACKEND_CHOICES = tuple(BENCH_CHOICES)  # from the backend table: each backend's bench_choices
MaddsAt = Callable[[tuple[int, ...]], int | None]
BytesAt = Callable[[tuple[int, ...]], int | None]  # bytes the model's activations take at a full input shape
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
    activations_at: BytesAt | None = None  # known for a target with an ONNX graph


@dataclass(frozen=True)
class Skipped:
    backend: str
    reason: str
    batch_refused: bool = False  # the model's fixed batch is why: choosing another --batch is the fix


def _onnx_counts(path: str | Path) -> tuple[MaddsAt, BytesAt]:
    """Multiply-adds and activation bytes of the ONNX graph at `path`, which is read once, when first asked."""
    read: list[onnx.ModelProto] = []

    def graph() -> onnx.ModelProto:
        if not read:
            read.append(onnx.load(os.fspath(path), load_external_data=False))
        return read[0]

    def madds(shape: tuple[int, ...]) -> int | None:
        counted = count_onnx_macs(graph(), shape)
        return None if counted.unresolved and not counted.madds else counted.madds

    def activations(shape: tuple[int, ...]) -> int | None:
        try:
            return arena_bytes(graph(), shape)
        except Exception:  # an estimate guards against the OOM killer; never a reason to refuse a run
            return None
    return madds, activations


def torch_madds(loaded: Any) -> MaddsAt:
    """Multiply-adds counted on the model itself, one image per shape, times the batch (every counted layer's
    work grows with it). Not on the meta device (zoo.flops.complexity_at): running a model there imports
    torch._dynamo, 1-4 s in a process that has no other use for it (the demo's deploy), where one forward
    pass of one image costs about 0.1 s; a user factory may not build on the meta device either."""
    per_image: dict[tuple[int, ...], int] = {}

    def at(shape: tuple[int, ...]) -> int | None:
        image = (1, shape[1], shape[2], shape[3])
        if image not in per_image:
            with model_code(loaded.spec, f" (counting multiply-adds on {'x'.join(map(str, image))})"):
                per_image[image] = count_complexity(loaded.module, image).madds
        return shape[0] * per_image[image]
    return at


def torch_activations(loaded: Any) -> BytesAt:
    """Bytes a forward of the model itself holds at a full input shape, scaled from one pass at a smaller size
    (exporters.scaled_forward); None where no smaller size is needed or known."""
    def at(shape: tuple[int, ...]) -> int | None:
        measured = scaled_forward(loaded, shape)
        return None if measured is None else TORCH_RUN_COPIES * measured.peak
    return at


def _no_madds(_shape: tuple[int, ...]) -> int | None:
    return None


def as_bench_target(opened: Target, backend: str, label: str | None = None) -> BenchTarget:
    activations: BytesAt | None = None
    if opened.onnx_path is not None:
        (madds, activations), source = _onnx_counts(opened.onnx_path), ONNX_COUNT
    elif opened.loaded is not None:
        madds, source = torch_madds(opened.loaded), TORCH_COUNT
        activations = torch_activations(opened.loaded)
    else:
        madds, source = _no_madds, "unknown (an engine carries no graph to count)"
    name = label or (opened.label if opened.loaded is not None else Path(opened.label).name)
    return BenchTarget(label=name, kind=opened.kind, backend=backend, precision=opened.precision,
                       runner=opened.runner, default_hw=opened.input_size, madds_at=madds, madds_source=source,
                       activations_at=activations)


"""What a command runs: a zoo name or `package.module:factory` (PyTorch), an .onnx file (ONNX Runtime), or a
built artifact (its sidecar names the backend). `open_target` resolves any of them to a Runner plus what is
known about the model (task, preprocessing, input size, precision), so parity and bench need no case analysis.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from deploykit.backends.base import BACKENDS, FILE_SUFFIXES, ONNX_RUNNER, Backend, self_described
from deploykit.backends.torch import TorchRunner, module_dtype
from deploykit.errors import ConfigConflict, InputError
from deploykit.io.metadata import ModelMetadata, read_metadata
from deploykit.io.model_files import read_onnx, require_file
from deploykit.io.sidecar import Sidecar, read_sidecar, sidecar_path
from deploykit.precision.table import BASELINE, PRECISIONS, detect_precision
from deploykit.runner import InputSizes, Kind, Runner, Target
from deploykit.types import Task
from deploykit.zoo.sources import LoadedModel, load_model, user_code_name

FILE_TARGET_HINT = "give an .onnx file, a built artifact, a zoo name (`deploykit models`) or package.module:factory"


def is_file_target(target: str) -> bool:
    """Whether `target` names a file (ONNX model or built artifact) rather than a zoo name or factory."""
    return Path(target).suffix.lower() in FILE_SUFFIXES or Path(target).is_file()


def open_target(
    target: str,
    *,
    options: Mapping[str, Any] | None = None,
    weights: str | os.PathLike[str] | None = None,
    allow_partial: bool = False,
    trust_checkpoint: bool = False,
    task: Task | None = None,
    providers: Sequence[str] = ("cpu",),
    threads: int | None = None,
    sidecar: Sidecar | None = None,
) -> Target:
    """Resolve `target` to a Runner and its model facts; see the module docstring. `sidecar`: the artifact's
    sidecar when the caller has read it already (deploy), so it is not read again."""
    if not is_file_target(target):
        return _torch_target(target, options=options, weights=weights, allow_partial=allow_partial,
                             trust_checkpoint=trust_checkpoint, task=task, threads=threads)
    if options or weights is not None:
        raise ConfigConflict(f"--set and --weights apply to PyTorch models; {target} is a file with its weights "
                             "inside")
    path = require_file(target, "model", FILE_TARGET_HINT)
    sidecar = sidecar or read_sidecar(path)
    if sidecar is not None:
        opened = _artifact_target(path, sidecar, task=task, providers=providers, threads=threads)
        opened.onnx_path = _built_from(path, sidecar.build_options) or opened.onnx_path
        opened.budget = (sidecar.precision_report.get("budget") or {}).get("budget")
        return opened
    bare = self_described(path)
    if bare is not None:
        return _bare_target(path, bare, task=task, providers=providers, threads=threads)
    if path.suffix.lower() not in ONNX_RUNNER.suffixes:
        raise InputError(f"{path} has no sidecar {sidecar_path(path).name}; engines are run only with the "
                         "sidecar build-engine writes beside them (rebuild it with `deploykit build-engine`)")
    return _onnx_target(path, task=task, providers=providers, threads=threads)


class _TorchTargetRunner(TorchRunner):
    """TorchRunner naming outputs as the exporter does: the spec's names if they fit, else output/output_i."""

    def names_for(self, count: int) -> tuple[str, ...]:
        if len(self.output_names) == count:
            return self.output_names
        return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))


def _torch_target(source: str, *, options: Mapping[str, Any] | None, weights: str | os.PathLike[str] | None,
                  allow_partial: bool, trust_checkpoint: bool, task: Task | None, threads: int | None) -> Target:
    # Seeded so that a model without weights gets the same initialisation in every process.
    loaded = load_model(source, options=options, weights=weights, allow_partial=allow_partial, task=task,
                        trust_checkpoint=trust_checkpoint)
    return torch_target(loaded, source_label(source, options, weights), threads=threads)


def torch_target(loaded: LoadedModel, label: str, *, threads: int | None = None) -> Target:
    """A Target over a model already built (deploy builds it once and hands it to every step)."""
    spec = loaded.spec
    user_code = user_code_name(spec)
    runner = _TorchTargetRunner(loaded.module, input_names=spec.input_names, output_names=spec.output_names,
                                threads=threads, user_code=user_code, channels=None if user_code else 3)
    default = "" if user_code else f"its default size {spec.input_size[0]}x{spec.input_size[1]} works"
    runner.sizes = InputSizes.of_spec(spec, loaded.options, default)
    return Target(runner=runner, kind="torch", label=label, task=spec.task, num_classes=spec.num_classes,
                  preprocessing=spec.preprocessing, input_size=spec.input_size,
                  precision=torch_precision(loaded.module), input_name=spec.input_names[0], loaded=loaded)


def torch_precision(module: nn.Module) -> str:
    """The precision a PyTorch model computes in, as PRECISIONS names it: a float16 or bfloat16 model (`.half()`)
    the float16-computing entry's, any other the baseline's."""
    if module_dtype(module) not in (torch.float16, torch.bfloat16):
        return BASELINE.name
    return next((p.name for p in PRECISIONS.values() if p.float16_compute), BASELINE.name)


def source_label(source: str, options: Mapping[str, Any] | None, weights: str | os.PathLike[str] | None) -> str:
    """How reports name a PyTorch model: the source, with its --set options and weights file if any."""
    if not (options or weights):
        return source
    parts = [f"{k}={v}" for k, v in (options or {}).items()]
    return f"{source} ({', '.join(parts + ([Path(weights).name] if weights is not None else []))})"


INTEGER_TYPES = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8, onnx.TensorProto.UINT16, onnx.TensorProto.INT16,
                 onnx.TensorProto.UINT32, onnx.TensorProto.INT32, onnx.TensorProto.UINT64, onnx.TensorProto.INT64}


@dataclass(frozen=True)
class _GraphInput:
    """What the first real graph input (not an initializer) tells about the model's input."""

    name: str
    static: tuple[int, ...] | None  # every dimension fixed
    size: tuple[int, int] | None  # fixed (H, W) of N,C,H,W
    channels: int | None  # fixed C of N,C,H,W
    integer: bool  # holds integers: a model that takes uint8 pixels and normalises itself


def _graph_input(model: onnx.ModelProto) -> _GraphInput:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise InputError("the ONNX model has no inputs")
    tensor = inputs[0].type.tensor_type
    values = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    full = tuple(int(v) for v in values if v is not None) if all(v is not None for v in values) else None
    size = (int(values[2]), int(values[3])) if len(values) == 4 and values[2] and values[3] else None
    channels = int(values[1]) if len(values) == 4 and values[1] else None
    return _GraphInput(inputs[0].name, full, size, channels, tensor.elem_type in INTEGER_TYPES)


def _onnx_target(path: Path, *, task: Task | None, providers: Sequence[str], threads: int | None) -> Target:
    model = read_onnx(path, external_data=False)
    meta = read_metadata(model)
    runner = ONNX_RUNNER.open(path, None, providers=providers, threads=threads)
    return _file_target(runner, "onnx", path, meta, model, detect_precision(model, meta), task)


def _file_target(runner: Runner, kind: Kind, path: Path, meta: ModelMetadata | None, model: onnx.ModelProto | None,
                 precision: str, task: Task | None) -> Target:
    graph = _graph_input(model) if model is not None else _GraphInput("", None, None, None, False)
    if meta is not None and task is not None and task != meta.task:
        raise ConfigConflict(f"{path} is a {meta.task} model (its metadata says so); drop --task {task}")
    runner.sizes = InputSizes.of(meta)
    return Target(
        runner=runner, kind=kind, label=str(path), task=meta.task if meta else task,
        num_classes=meta.num_classes if meta else 0, preprocessing=meta.preprocessing if meta else None,
        input_size=graph.size or (meta.input_size if meta else None), precision=precision,
        input_name=graph.name or (meta.input_names[0] if meta else runner.input_specs()[0].name),
        onnx_path=path if model is not None else None, metadata=meta, static_input=graph.static,
        channels=graph.channels, integer_input=graph.integer,
    )


def _built_from(artifact: Path, build_options: Mapping[str, Any]) -> Path | None:
    """The ONNX graph an artifact was compiled from (its FP16 / Q/DQ graph), as the sidecar records it: relative
    to the artifact's folder, or to the folder the build ran in."""
    recorded = build_options.get("onnx_path")
    if not isinstance(recorded, str) or not recorded:
        return None
    for candidate in (artifact.parent / recorded, Path(recorded)):
        if candidate.is_file():
            return candidate
    return None


def _artifact_target(path: Path, sidecar: Sidecar, *, task: Task | None, providers: Sequence[str],
                     threads: int | None) -> Target:
    entry = BACKENDS.get(sidecar.backend)
    if entry is None or entry.reference:
        raise InputError(f"{path}: its sidecar names backend {sidecar.backend!r}, which deploykit does not know; "
                         "rebuild it with `deploykit build-engine`")
    meta = ModelMetadata.from_record(sidecar.model)
    runner = entry.open(path, sidecar, providers=providers, threads=threads)
    model = read_onnx(path, external_data=False) if entry.runs_onnx else None
    if meta is None:
        meta = read_metadata(model) if model is not None else runner.metadata()
    return _file_target(runner, "artifact", path, meta, model, sidecar.precision, task)


def _bare_target(path: Path, entry: Backend, *, task: Task | None, providers: Sequence[str],
                 threads: int | None) -> Target:
    """An artifact without a sidecar from a self-describing backend (an OpenVINO .xml): its model facts are
    the metadata it carries (ModelMetadata via the Runner), its precision the one recorded there."""
    runner = entry.open(path, None, providers=providers, threads=threads)
    meta = runner.metadata()
    precision = meta.precision if meta is not None and meta.precision else BASELINE.name
    return _file_target(runner, "artifact", path, meta, None, precision, task)

"""OpenVINO runner: an IR (or any model OpenVINO reads) compiled for the CPU plugin, tuned for latency.

Compile options (OpenVINO docs, "CPU Device" and "Precision Control"):
- PERFORMANCE_HINT LATENCY: one stream, all threads on one request, as `deploykit bench` measures;
- INFERENCE_NUM_THREADS: --threads when given (else the plugin uses every core);
- INFERENCE_PRECISION_HINT f32: on CPUs with AVX512_BF16 or AMX the plugin's default is bf16 (measured here on
  an AVX512_BF16 EPYC: `core.get_property("CPU", "INFERENCE_PRECISION_HINT")` is bfloat16), which would run
  every non-quantized layer in bfloat16 behind the build's back. deploykit's precision is a graph transform,
  so the runtime runs the graph as written: FP32 in float32, INT8 Q/DQ in int8 (the FakeQuantize layers keep
  their low precision whatever the hint).
A model with dynamic dimensions is compiled once per input shape (kept for the last few shapes): the CPU
plugin's static-shape kernels are faster than its dynamic path, and a bench or parity run uses a few shapes.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deploykit.environment import runtime_telemetry_off
from deploykit.errors import BackendUnavailable, InputError, first_line, not_installed, out_of_memory
from deploykit.io.metadata import ModelMetadata
from deploykit.runner import Dim, Runner, TensorSpec, shape_refused

DEVICE = "CPU"


def load_openvino() -> Any:
    runtime_telemetry_off()  # before the first import of openvino, which imports its telemetry
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        if not_installed(exc, "openvino"):
            raise BackendUnavailable("OpenVINO is not installed: pip install 'deploykit[openvino]'") from exc
        raise BackendUnavailable(f"import openvino failed: {first_line(exc)}; reinstall OpenVINO") from exc
    except Exception as exc:  # a broken install raises OSError / RuntimeError, as availability() reports
        raise BackendUnavailable(f"import openvino failed: {first_line(exc)}; reinstall OpenVINO") from exc


def weights_path(artifact: str | os.PathLike[str]) -> Path:
    """The .bin OpenVINO reads beside an .xml (read_model's default)."""
    return Path(artifact).with_suffix(".bin")



WEIGHTED_LAYERS = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")
SHAPES_KEPT = 4


def compile_options(threads: int | None) -> dict[str, Any]:
    options: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        options["INFERENCE_NUM_THREADS"] = int(threads)
    return options


def runtime_precisions(compiled: Any) -> dict[str, dict[str, int]]:
    """Layer type -> {runtime precision: count} for the weighted layers of a compiled model: what the CPU
    plugin actually runs (u8 / i8 for quantized layers, f32 otherwise), from `get_runtime_model()`."""
    counts: dict[str, Counter[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = str(info["layerType"].astype(str)) if "layerType" in info else ""
        if layer in WEIGHTED_LAYERS:
            precision = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "?"
            counts.setdefault(layer, Counter())[precision] += 1
    return {layer: dict(sorted(c.items())) for layer, c in sorted(counts.items())}


def _dims(shape: Any) -> tuple[Dim, ...]:
    return tuple(d.get_length() if d.is_static else None for d in shape)


def _specs(ports: Any) -> list[TensorSpec]:
    return [TensorSpec(p.get_any_name(), _dims(p.get_partial_shape()), np.dtype(p.get_element_type().to_dtype()).name)
            for p in ports]


class OpenVinoRunner(Runner):
    backend = "openvino"

    def __init__(self, model: str | os.PathLike[str], *, threads: int | None = None) -> None:
        super().__init__()
        self.model_path = Path(model)
        self.threads = threads
        self._model: Any = None
        self._core: Any = None
        self._compiled: OrderedDict[tuple[tuple[int, ...], ...], tuple[Any, Any]] = OrderedDict()

    def _open(self) -> None:
        if self._model is not None:
            return
        ov = load_openvino()
        if not self.model_path.is_file():
            raise InputError(f"OpenVINO model {self.model_path} does not exist")
        if self.model_path.suffix == ".xml" and not weights_path(self.model_path).is_file():
            raise InputError(f"{self.model_path} has no weights beside it ({weights_path(self.model_path).name}); "
                             "copy the .bin with the .xml, or rebuild it")
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(self.model_path))
        except Exception as exc:  # OpenVINO's own exception types
            raise InputError(f"OpenVINO cannot read {self.model_path}: {openvino_reason(exc)}; copy its .xml and .bin "
                             "together again, or rebuild it (deploykit build-engine --backend openvino)") from exc
        if self._model.is_dynamic():
            return
        self._compile({})

    def _close(self) -> None:
        self._compiled.clear()
        self._model = self._core = None

    def _compile(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[Any, Any]:
        key = tuple(shapes[s.name] for s in self.input_specs()) if shapes else ()
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        model = self._model
        if shapes:
            model = self._model.clone()
            model.reshape({name: list(shape) for name, shape in shapes.items()})
        compiled = self._core.compile_model(model, "CPU", compile_options(self.threads))
        self._compiled[key] = (compiled, compiled.create_infer_request())
        while len(self._compiled) > SHAPES_KEPT:
            self._compiled.popitem(last=False)
        return self._compiled[key]

    def _ready(self) -> Any:
        if self._model is None:
            self._open()
        return self._model

    def input_specs(self) -> list[TensorSpec]:
        return _specs(self._ready().inputs)

    def output_specs(self) -> list[TensorSpec]:
        return _specs(self._ready().outputs)

    def metadata(self) -> ModelMetadata | None:
        """The model's deploykit metadata (see metadata_from_ir), None for an IR from elsewhere."""
        return metadata_from_ir(self._ready(), self.model_path)

    def describe(self) -> str:
        return f"openvino[CPU{f', {self.threads} threads' if self.threads else ''}]"

    def compiled_model(self, feed: Mapping[str, np.ndarray] | None = None) -> Any:
        """The compiled model that runs `feed` (a static model's only one without a feed)."""
        self._ready()
        dynamic = self._model.is_dynamic()
        if dynamic and feed is None:
            raise InputError("this OpenVINO model has dynamic dimensions: give a feed to choose its shape")
        return self._compile({k: tuple(v.shape) for k, v in (feed or {}).items()} if dynamic else {})[0]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._ready()
        shapes = {k: tuple(v.shape) for k, v in feed.items()} if self._model.is_dynamic() else {}
        try:  # reshaping to the feed's shapes, or the CPU plugin at run time, may find a node that cannot take them
            compiled, request = self._compile(shapes)
            result = request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()}, share_inputs=True)
        except RuntimeError as exc:  # OpenVINO raises its checks as RuntimeError
            failure = node_failure(exc)
            if failure is None or out_of_memory(exc):
                raise
            raise shape_refused(os.fspath(self.model_path), {k: v.shape for k, v in feed.items()}, failure,
                                self.sizes) from exc
        return {port.get_any_name(): result[port] for port in compiled.outputs}  # copies (share_outputs=False)


_SOURCE_LOCATION = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")


def openvino_reason(exc: BaseException, limit: int = 300) -> str:
    """OpenVINO's message without the source locations it starts with ("Exception from src/inference/src/cpp/
    core.cpp:84:", "Check '...' failed at ...:900:"): its first line that says what is wrong."""
    try:
        lines = [line.strip() for line in str(exc).splitlines()]
    except Exception:  # a message that cannot be shown
        return first_line(exc, limit)
    said = [line for line in lines if line and not _SOURCE_LOCATION.match(line)]
    return said[0].rstrip(".!")[:limit] if said else first_line(exc, limit)


# OpenVINO's two forms: shape inference ("While validating node '<op> ...' with friendly_name 'x':\n<what>")
# and the CPU plugin's at run time ("[CPU] Add node with name 'x' Check '...' failed at <file>:<line>:\n<what>").
_VALIDATING = re.compile(r"While validating node '(?:\w+::)?(\w+).*?' with friendly_name '([^']*)':\s*\n(.*)",
                         re.DOTALL)
_CPU_NODE = re.compile(r"\[CPU\] (\w+) node with name '([^']*)'.*?\n(.*)", re.DOTALL)


def node_failure(exc: BaseException) -> str | None:
    """OpenVINO's message for a node that cannot take the shapes it was given, as "node x (Add): <what>"; None
    for any other error."""
    text = str(exc)
    found = _VALIDATING.search(text) or _CPU_NODE.search(text)
    if found is None:
        return None
    op_type, name, what = found.groups()
    lines = [line.strip() for line in what.splitlines() if line.strip()]
    return f"node {name or '?'} ({op_type}): {lines[0].rstrip('.')[:240] if lines else 'shapes do not fit'}"


def metadata_from_ir(model: Any, source: object = "the OpenVINO IR") -> ModelMetadata | None:
    """deploykit's metadata of a read OpenVINO model: its ONNX metadata_props survive conversion as the IR's
    rt_info["framework"] entries, so a bare .xml still knows its task, preprocessing and input size."""
    info = model.get_rt_info()
    if "framework" not in info:
        return None
    framework = info["framework"]
    props = {str(key): str(framework[key].astype(str)) for key in framework}
    return ModelMetadata.from_props(props, source)


def open_runner(artifact: str | os.PathLike[str], *, threads: int | None = None) -> OpenVinoRunner:
    """A runner (not yet entered) for an OpenVINO IR built by deploykit, or any .xml / .onnx OpenVINO reads."""
    return OpenVinoRunner(artifact, threads=threads)

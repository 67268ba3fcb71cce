"""ONNX Runtime's compile step: a precision-transformed ONNX model -> an ORT-optimized ONNX model.

The artifact is what ONNX Runtime writes with SessionOptions.optimized_model_filepath at the *extended*
level: fusions (Conv+activation, QDQ -> QLinearConv, ...) that are valid on any CPU. The *all* level would add
NCHWc layout transforms tied to this CPU's vector width (ORT warns the result "should only be used in the same
environment"); sessions apply those at load time anyway, so the artifact stays portable and the sidecar still
records the CPU it was built on.

INT8: the precision graph is lowered first (deploykit.graph.cpu_int8, shared with OpenVINO: UINT8
activations with observed ranges, joins and resampling in UINT8, 7-bit weights on x86 CPUs without VNNI); the
precision graph kept next to the artifact, model.int8.onnx, is what TensorRT compiles and stays symmetric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime as ort

from deploykit.errors import BuildError, first_line
from deploykit.evaluate import session_options
from deploykit.graph.cpu_int8 import Lowered, lower_for_cpu
from deploykit.io.outputs import atomic_output, scratch_folder

OPTIMIZATION = "extended"


@dataclass(frozen=True)
class Optimized:
    model: onnx.ModelProto
    note: str = ""  # why the model is not ONNX Runtime's optimized form ("" when it is)


def ort_optimized(model: onnx.ModelProto, *, threads: int | None = None, what: str = "the model") -> Optimized:
    """ONNX Runtime's optimized form of an already lowered `model` (what the artifact holds), in memory; `model`
    itself, with a note, when ONNX Runtime refuses to load the form it wrote (1.2x: two sibling If branches
    reading one outer float16 tensor get casts it names alike, "InsertedPrecisionFreeCast_<name>", which breaks
    SSA): a session optimizes the unoptimized graph at load time anyway, so the artifact still runs."""
    with scratch_folder("deploykit-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        options = session_options(threads, optimization=OPTIMIZATION)
        options.optimized_model_filepath = str(optimized)
        try:
            ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types
            raise BuildError(f"ONNX Runtime could not optimize {what}: {first_line(exc)}") from exc
        try:
            ort.InferenceSession(str(optimized), sess_options=session_options(threads, optimization="disable"),
                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT's own exception types
            return Optimized(model, f"ONNX Runtime's optimized form of {what} does not load again "
                                    f"({first_line(exc)}); the artifact is the graph before its optimizations, "
                                    "which sessions apply when they load it")
        return Optimized(onnx.load(str(optimized)))


def ort_model_from_onnx(
    onnx_path: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool, threads: int | None = None,
    seven_bit: bool | None = None, float_source: onnx.ModelProto | None = None,
) -> tuple[Lowered, str]:
    """Write ONNX Runtime's optimized form of `onnx_path` to `out` (atomically); metadata is carried over.
    `float_source` is the float model a Q/DQ `onnx_path` was built from, as loaded (for 7-bit weights from float).
    Returns what the INT8 lowerings changed (its model is the lowered graph before ORT's optimizations), and why the
    artifact is not ORT's optimized form ("" when it is: see ort_optimized)."""
    source = onnx.load(str(onnx_path))
    result = lower_for_cpu(source, seven_bit=seven_bit, float_source=float_source)
    optimized = ort_optimized(result.model, threads=threads, what=str(onnx_path))
    model = optimized.model
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    with atomic_output(out, force=force) as tmp_path:
        onnx.save(model, str(tmp_path))
    return result, optimized.note
